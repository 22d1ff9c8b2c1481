"""ComfyUI node classes of the pack. Each node module exports its own two mappings; they are merged here."""
from . import inflate, tune, tuned_io

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for module in (inflate, tune, tuned_io):
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)

"""ComfyUI node classes of the pack. Each node module exports its own two mappings; they are merged here."""
from . import ddim, inflate, load_video, tune, tuned_io

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for module in (load_video, inflate, tune, tuned_io, ddim):
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)

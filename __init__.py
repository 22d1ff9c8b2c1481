"""EI² video editing for ComfyUI (NeurIPS 2023, arXiv 2305.17431).

ComfyUI reads only the two mappings below. Importing this file stays cheap: node modules import
nothing heavier than torch, which ComfyUI has already loaded.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

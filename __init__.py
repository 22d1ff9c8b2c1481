"""EI² video editing for ComfyUI (NeurIPS 2023, arXiv 2305.17431).

ComfyUI reads only the two mappings below. Importing this file stays cheap: node modules import
nothing heavier than torch, which ComfyUI has already loaded.
"""
if __package__:  # ComfyUI imports the folder as a package. pytest may import this file on its own when the
    # clone's folder name is not a module name (e.g. "tmp.x1y2"); then there is nothing to register.
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

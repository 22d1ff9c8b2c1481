"""A real ComfyUI server in a subprocess; the implementation is ``ei2.cli.runner``, shared with the CLI."""
from ei2.cli.runner import ComfyServer, PromptFailed, free_port  # noqa: F401  (the harness's public names)

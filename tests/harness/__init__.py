"""Test harness: a real ComfyUI (in-process or as a server) and a tiny SD1.5-shaped checkpoint."""

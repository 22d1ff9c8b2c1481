"""Tooling around ComfyUI, apart from the method in ``ei2``: the command line (``python -m ei2``), the
ComfyUI server runner and client, the UI→API workflow converter and the tiny test checkpoint.

These start processes and talk to (or import) ComfyUI; the method modules beside this package do neither.
"""

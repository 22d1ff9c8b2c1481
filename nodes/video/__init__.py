"""What LoadVideoFrames does, one module per job (the node class → here → ``adapter.runtime``):

- ``paths``: which files may be loaded: the input folder, its video list, one name's real path;
- ``settings``: the frame selection and size settings, checked with messages a user can act on;
- ``resize``: how a source frame becomes an output frame (sizes, scaling, RGB);
- ``memory``: whether the selected frames fit into free RAM;
- ``decode``: the decoding loop that turns a file into an IMAGE batch;
- ``audio``: the sound of the selected frames (PyAV), as ComfyUI's AUDIO.
"""

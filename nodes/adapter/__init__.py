"""The one place that knows ComfyUI's internals, one module per job (node classes → here → ``ei2``):

- ``patching``: an SD 1.x MODEL becomes an EI² video model (frame attention, temporal modules);
- ``training``: one-shot tuning on ComfyUI's loaded UNet;
- ``tuned_state``: what tuning changed, as weight patches on the MODEL and as a file;
- ``sampling``: DDIM inversion and sampling through ComfyUI's sampler machinery;
- ``runtime``: progress bars, cancel and the input folder of the running ComfyUI.
"""

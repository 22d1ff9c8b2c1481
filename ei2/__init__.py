"""EI² video editing core: frame attention (FFAM) and temporal attention (STAM) in plain PyTorch.

Import the submodules you need (``ei2.ffam``, ``ei2.stam``, ``ei2.temporal``, …); this package file
stays empty so that importing it costs nothing.
"""

__version__ = "0.1.0"

"""annot-denoise: remove annotations burned into medical images."""

__version__ = "0.1.0"

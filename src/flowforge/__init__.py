"""flowforge: flow-based generative modeling in PyTorch."""

from flowforge import paths, utils

__version__ = "0.1.0"
__all__ = ["paths", "utils", "__version__"]

"""flowforge: flow-based generative modeling in PyTorch.

Subpackages follow the field's concepts: ``paths`` (what a field learns), ``losses`` (objectives
and time densities), ``solvers`` (ODE/SDE samplers, likelihoods), ``guidance`` (CFG, RAAG),
``models`` (networks), ``data``, ``metrics``, ``train`` and ``cli``.
"""

from flowforge import data, guidance, losses, metrics, models, paths, solvers, train, utils

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "data",
    "guidance",
    "losses",
    "metrics",
    "models",
    "paths",
    "solvers",
    "train",
    "utils",
]

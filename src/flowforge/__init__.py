"""flowforge: flow-based generative modeling in PyTorch.

Subpackages follow the field's concepts: ``paths`` (what a field learns), ``losses`` (objectives
and time densities), ``solvers`` (ODE/SDE samplers, likelihoods), ``guidance`` (CFG, RAAG),
``models`` (networks), ``latent`` (autoencoders and latent codecs), ``data``, ``metrics``,
``train`` and ``cli``.
"""

from flowforge import (
    data,
    guidance,
    latent,
    losses,
    metrics,
    models,
    paths,
    solvers,
    train,
    utils,
)

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "data",
    "guidance",
    "latent",
    "losses",
    "metrics",
    "models",
    "paths",
    "solvers",
    "train",
    "utils",
]

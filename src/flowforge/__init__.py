"""flowforge: flow-based generative modeling in PyTorch.

Subpackages follow the field's concepts: ``paths`` (what a field learns), ``losses`` (objectives
and time densities), ``solvers`` (ODE/SDE samplers, likelihoods), ``guidance`` (CFG, RAAG),
``models`` (networks), ``latent`` (autoencoders and latent codecs), ``distill`` (few-step
methods), ``data``, ``metrics``, ``train``, ``recipes`` (each method's run: config, network,
objective, sampler, evaluation) and ``cli``. They load on first use (``fl.paths.CondOTPath``
imports them), so ``flowforge --help`` starts without torch.

``flowforge.load("runs/x")`` reads a trained run back as a ``Run`` that samples and evaluates;
``flowforge.fit(preset_or_config, "train.steps=500")`` trains one, as ``flowforge train`` does.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def load(run: str | os.PathLike):
    """Read a run directory as a ``flowforge.recipes.Run`` (see ``flowforge.recipes.load``)."""
    from flowforge.recipes.run import load as load_run  # the recipes import every method

    return load_run(run)


def fit(config="toy2d_fm", *overrides: str, run_dir=None, evaluate: bool = True):
    """Train a run like ``flowforge train`` and return it (see ``flowforge.recipes.fit``)."""
    from flowforge.recipes.fitting import fit as fit_run

    return fit_run(config, *overrides, run_dir=run_dir, evaluate=evaluate)


def __getattr__(name: str):
    """The subpackages, imported on first access (all of them: they import torch anyway)."""
    if name not in __all__:
        raise AttributeError(f"module 'flowforge' has no attribute {name!r}")
    from flowforge import (
        data,
        distill,
        guidance,
        latent,
        losses,
        metrics,
        models,
        paths,
        recipes,
        solvers,
        train,
        utils,
    )

    subpackages = {
        "data": data,
        "distill": distill,
        "guidance": guidance,
        "latent": latent,
        "losses": losses,
        "metrics": metrics,
        "models": models,
        "paths": paths,
        "recipes": recipes,
        "solvers": solvers,
        "train": train,
        "utils": utils,
    }
    return subpackages[name]


__all__ = [
    "__version__",
    "data",
    "distill",
    "fit",
    "guidance",
    "latent",
    "load",
    "losses",
    "metrics",
    "models",
    "paths",
    "recipes",
    "solvers",
    "train",
    "utils",
]

"""Recipes: each method's whole command-line knowledge, and runs from Python.

A recipe (``Recipe``) says what a method's ``method:`` section holds, which network it builds
for the run's data (``VectorData``, ``ImageData``, ``VideoData`` or a Boltzmann target's
``TargetData``), its objective and training data, how it
samples and counts NFE, and what its evaluation reports and draws. ``RECIPES`` is the one table
from ``method.name`` to recipe; a new method is one file and one row. ``fit`` trains a run,
``load`` reads one back as a ``Run`` that samples and evaluates through the same recipe.

The names below load on first access, so the command line can list presets without torch.

Example:
    >>> import flowforge.recipes as recipes
    >>> recipes.RECIPES["fm"].__name__, recipes.RECIPES["boltzmann"].__name__
    ('FlowMatchingRecipe', 'BoltzmannRecipe')
"""

# ruff: noqa: F401  (the imports of __getattr__ are its return values, through locals())

from __future__ import annotations


def __getattr__(name: str):
    """The public names, imported on first access (other names, submodules among them, are
    left to the import system)."""
    if name not in __all__:
        raise AttributeError(f"module 'flowforge.recipes' has no attribute {name!r}")
    from flowforge.recipes.base import (
        Recipe,
        RunData,
        Sampler,
        Samples,
        TrainContext,
        Training,
        guided_field,
        ode_sample,
        ode_sampler,
    )
    from flowforge.recipes.config import (
        ConfigError,
        DataConfig,
        EvalConfig,
        MethodConfig,
        ModelConfig,
        RunConfig,
        SampleConfig,
    )
    from flowforge.recipes.config_io import apply_overrides, load_yaml, save_yaml
    from flowforge.recipes.fitting import fit
    from flowforge.recipes.images import ImageData
    from flowforge.recipes.run import Run, load
    from flowforge.recipes.table import RECIPES, recipe_for
    from flowforge.recipes.validation import validate
    from flowforge.recipes.vectors import VectorData

    return locals()[name]


__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ImageData",
    "MethodConfig",
    "ModelConfig",
    "RECIPES",
    "Recipe",
    "Run",
    "RunConfig",
    "RunData",
    "SampleConfig",
    "Sampler",
    "Samples",
    "TrainContext",
    "Training",
    "VectorData",
    "apply_overrides",
    "fit",
    "guided_field",
    "load",
    "load_yaml",
    "ode_sample",
    "ode_sampler",
    "recipe_for",
    "save_yaml",
    "validate",
]

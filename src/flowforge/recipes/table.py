"""The one table of recipes: ``method.name`` -> the recipe class.

Adding a method is one recipe file and one row here. Nothing else in the package tests a
method's name; the command line, the config reader and ``flowforge.load`` ask the run's recipe.

Example:
    >>> from flowforge.recipes.config import RunConfig
    >>> type(recipe_for(RunConfig())).__name__
    'FlowMatchingRecipe'
    >>> config_class("meanflow").__name__
    'MeanFlowConfig'
"""

from __future__ import annotations

import difflib

from flowforge.recipes.autoencoder import AutoencoderRecipe
from flowforge.recipes.base import Recipe
from flowforge.recipes.blockwise import BlockwiseRecipe
from flowforge.recipes.boltzmann import BoltzmannRecipe
from flowforge.recipes.config import ConfigError, MethodConfig, RunConfig
from flowforge.recipes.finetune import FinetuneRecipe
from flowforge.recipes.flow_matching import FlowMatchingRecipe
from flowforge.recipes.flowturbo import FlowTurboRecipe
from flowforge.recipes.freeflow import FreeFlowRecipe
from flowforge.recipes.gfn import GFNRecipe
from flowforge.recipes.meanflow import MeanFlowRecipe
from flowforge.recipes.reflow import ReflowRecipe
from flowforge.recipes.starflow import STARFlowRecipe
from flowforge.recipes.symmflow import SymmFlowRecipe
from flowforge.recipes.tarflow import TARFlowRecipe
from flowforge.recipes.twinflow import TwinFlowRecipe
from flowforge.recipes.zuko_flow import ZukoRecipe

__all__ = ["RECIPES", "all_solvers", "config_class", "recipe_class", "recipe_for"]

RECIPES: dict[str, type[Recipe]] = {
    "fm": FlowMatchingRecipe,
    "symmflow": SymmFlowRecipe,
    "autoencoder": AutoencoderRecipe,
    "reflow": ReflowRecipe,
    "meanflow": MeanFlowRecipe,
    "freeflow": FreeFlowRecipe,
    "twinflow": TwinFlowRecipe,
    "flowturbo": FlowTurboRecipe,
    "blockwise": BlockwiseRecipe,
    "tarflow": TARFlowRecipe,
    "starflow": STARFlowRecipe,
    "zuko": ZukoRecipe,
    "boltzmann": BoltzmannRecipe,
    "gfn": GFNRecipe,
    "finetune": FinetuneRecipe,
}


def recipe_class(name: str) -> type[Recipe]:
    """The recipe of ``method.name=name``; ``ConfigError`` naming the recipes if none."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"method.name={name!r} is not a recipe; choose one of {list(RECIPES)}.{hint}"
        )
    return RECIPES[name]


def config_class(name: str) -> type[MethodConfig]:
    """The dataclass of the ``method:`` section of recipe ``name``."""
    return recipe_class(name).Config


def recipe_for(config: RunConfig) -> Recipe:
    """The recipe of a run, bound to its config."""
    return recipe_class(config.method.name)(config)


def all_solvers() -> list[str]:
    """Every ``sample.solver`` name some recipe accepts (ODE solvers first)."""
    names: dict[str, None] = {}
    for recipe in RECIPES.values():
        names.update(dict.fromkeys(recipe.solvers))
    return list(names)

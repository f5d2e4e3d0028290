"""TwinFlow (``method.name: twinflow``): a one-step generator rectified by its own
negative-time twin flow, no teacher.

A two-time network (t, tt) is trained with TwinFlow's objective (its EMA target is part of the
objective's state, saved and resumed with the checkpoints); labels are dropped at
``cond_dropout``. Samples with its own jumps (``fewstep``).

References:
    TwinFlow (card 08, docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from flowforge.distill.twinflow import TwinFlowLoss
from flowforge.distill.twinflow_sampling import twinflow_sample
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training, own_sampler
from flowforge.recipes.config import MethodConfig, SampleConfig, meta
from flowforge.recipes.flow_matching import check_cond_dropout, cond_dropout_key, label_dropout

__all__ = ["TwinFlowConfig", "TwinFlowRecipe"]


@dataclass
class TwinFlowConfig(MethodConfig):
    """TwinFlow: label dropout (its other weights are the paper's defaults)."""

    name: str = field(default="twinflow", metadata=meta("the recipe: TwinFlow"))
    cond_dropout: float = cond_dropout_key()


class TwinFlowRecipe(Recipe):
    """A one-step generator and its twin flow in one two-time network."""

    name = "twinflow"
    Config = TwinFlowConfig
    solvers = ("fewstep",)
    guided_solvers = ()

    def validate(self) -> None:
        """Label dropout in range."""
        check_cond_dropout(self.method)

    def build_model(self, data: RunData) -> nn.Module:
        """The data's field network with two time inputs (t, tt)."""
        return data.network(self.config.model, n_times=2)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``TwinFlowLoss``, labels dropped."""
        loss = label_dropout(TwinFlowLoss(), self.method, data.num_classes)
        return Training(objective=loss, data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """``nfe`` steps of TwinFlow's sampler."""

        return own_sampler(lambda x_0, nfe, cond: (twinflow_sample(model, x_0, nfe, cond), nfe))

"""Data-free flow-map distillation (``method.name: freeflow``): a flow map from the teacher
alone, no training image or point read.

A two-time student X(x, s, t) is trained on the teacher's velocity along its own predicted
trajectories from noise; a share ``flow_map_ratio`` of the examples has two times s < t. Samples
with its own jumps (``fewstep``).

References:
    FreeFlow: data-free flow-map distillation (card 07, docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from flowforge.distill.freeflow import FreeFlowLoss, freeflow_sample
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training, own_sampler
from flowforge.recipes.config import MethodConfig, SampleConfig, meta
from flowforge.recipes.meanflow import check_ratio
from flowforge.recipes.teacher import (
    TEACHER_CONFIG,
    TEACHER_FILE,
    require_teacher,
    resolve_teacher,
    teacher_key,
    training_teacher,
)

__all__ = ["FreeFlowConfig", "FreeFlowRecipe"]


@dataclass
class FreeFlowConfig(MethodConfig):
    """FreeFlow: the teacher and the two-time share."""

    name: str = field(default="freeflow", metadata=meta("the recipe: data-free FreeFlow"))
    teacher: str | None = teacher_key()
    flow_map_ratio: float = field(
        default=0.25, metadata=meta("share of examples with two times s < t")
    )


class FreeFlowRecipe(Recipe):
    """A flow map distilled from a teacher without data."""

    name = "freeflow"
    Config = FreeFlowConfig
    solvers = ("fewstep",)
    guided_solvers = ()
    run_files = (TEACHER_FILE, TEACHER_CONFIG)

    def validate(self) -> None:
        """A teacher and a ratio in range."""
        require_teacher(self.config)
        check_ratio(self.method)

    def prepare(self) -> None:
        """The teacher's directory, made absolute."""
        resolve_teacher(self.config)

    def build_model(self, data: RunData) -> nn.Module:
        """The data's field network with two time inputs (s, t)."""
        return data.network(self.config.model, n_times=2)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``FreeFlowLoss`` on the teacher; the data stream only sets the batch shape."""
        teacher = training_teacher(self.config, data, context)
        loss = FreeFlowLoss(teacher, two_time_fraction=self.method.flow_map_ratio)
        return Training(objective=loss, data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """``nfe`` jumps of the flow map."""

        return own_sampler(lambda x_0, nfe, cond: (freeflow_sample(model, x_0, nfe, cond), nfe))

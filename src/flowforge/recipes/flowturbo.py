"""FlowTurbo (``method.name: flowturbo``): a small velocity refiner beside a frozen teacher.

Sampling runs the teacher's Heun steps near the noise, pseudo-corrector steps (second order
for one evaluation, reusing the previous predicted velocity) in the middle and refiner steps
near the data, as ``method.schedule`` H<a>P<b>R<c> says. A row's NFE counts teacher calls
(2a + b + 1 when c > 0; ``flowturbo_nfe``), fixed by the schedule; the refiner's cheaper calls
are listed in the sampler's docs. The refiner is an MLP on [x, v] for vectors and a UNet on the
concatenated state and velocity channels for images.

References:
    FlowTurbo (Zhao et al., 2024), arXiv:2409.18128 (card 09).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from flowforge.distill.flowturbo import (
    ConcatRefiner,
    MLPRefiner,
    MLPRefinerConfig,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
)
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training, own_sampler
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.images import ImageData
from flowforge.recipes.teacher import (
    TEACHER_CONFIG,
    TEACHER_FILE,
    require_teacher,
    resolve_teacher,
    run_teacher,
    teacher_key,
    teacher_network,
    training_teacher,
)

__all__ = ["FlowTurboConfig", "FlowTurboRecipe"]


@dataclass
class FlowTurboConfig(MethodConfig):
    """FlowTurbo: the teacher, the sampling schedule and the refiner's size."""

    name: str = field(default="flowturbo", metadata=meta("the recipe: FlowTurbo"))
    teacher: str | None = teacher_key()
    schedule: str = field(
        default="H2P6R4",
        metadata=meta("Heun, pseudo-corrector and refiner steps, e.g. H2P6R4"),
    )
    refiner_hidden: int = field(default=64, metadata=meta("refiner width"))
    refiner_depth: int = field(default=1, metadata=meta("refiner hidden layers (UNet levels)"))


class FlowTurboRecipe(Recipe):
    """A refiner trained on a frozen teacher's velocity changes; samples on H/P/R schedules."""

    name = "flowturbo"
    Config = FlowTurboConfig
    solvers = ("fewstep",)
    guided_solvers = ()
    run_files = (TEACHER_FILE, TEACHER_CONFIG)

    def __init__(self, config) -> None:
        super().__init__(config)
        self._teacher: nn.Module | None = None  # read once per run, shared by every sampler

    def validate(self) -> None:
        """A teacher, a well-formed schedule, positive refiner sizes."""
        m = self.method
        require_teacher(self.config)
        if not re.fullmatch(r"H\d+P\d+R\d+", m.schedule):
            raise ConfigError(
                f"method.schedule={m.schedule!r} is not of the form H<a>P<b>R<c>; use e.g. H2P6R4."
            )
        for key in ("refiner_hidden", "refiner_depth"):
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")

    def prepare(self) -> None:
        """The teacher's directory, made absolute."""
        resolve_teacher(self.config)

    def nfe_budgets(self, solver: str, nfes: list[int]) -> list[int]:
        """One row: the schedule's teacher calls, whatever ``eval.nfes`` holds."""
        return [flowturbo_nfe(self.method.schedule).predictor]

    def build_model(self, data: RunData) -> nn.Module:
        """An MLP refiner on [x, v] (vectors) or a UNet on [x, v] channels (images)."""
        m, model = self.method, self.config.model
        if isinstance(data, ImageData):
            C = data.shape[0]
            unet = UNetConfig(
                in_channels=2 * C,
                out_channels=C,
                base_channels=m.refiner_hidden,
                channel_mults=(1,) * m.refiner_depth,
                mid_attention=False,
                num_classes=data.num_classes,
                time_scale=model.time_scale,
            )
            return ConcatRefiner(UNetField(unet)).float()
        refiner = MLPRefinerConfig(
            dim=data.shape[0],
            hidden=m.refiner_hidden,
            depth=m.refiner_depth,
            time_embed_dim=model.time_embed_dim,
            num_classes=data.num_classes,
            class_embed_dim=model.class_embed_dim,
            activation=model.activation,
        )
        return MLPRefiner(refiner).float()

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``RefinerLoss`` on the frozen teacher."""
        self._teacher = training_teacher(self.config, data, context)
        return Training(objective=RefinerLoss(self._teacher), data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """The H/P/R schedule on the teacher (the run's copy) and the refiner."""
        if self._teacher is None:
            self._teacher = run_teacher(self.config, run_dir, teacher_network(data))
        teacher, schedule = self._teacher, self.method.schedule

        def fewstep(x_0, nfe, cond):
            x = flowturbo_sample(teacher, model, x_0, schedule=schedule, cond=cond)
            return x, flowturbo_nfe(schedule).predictor

        return own_sampler(fewstep)

"""Rectified flow with the rf++ recipe (``method.name: reflow``): one reflow round of a teacher.

The teacher's ODE couples noise with samples (``method.pairs`` pairs of ``method.teacher_nfe``
Euler steps, generated once and kept in the run as ``reflow_pairs.safetensors``); the student
starts from the teacher's weights and regresses the straight path between each pair, with
U-shaped training times and the pseudo-Huber distance of rf++. It is a velocity field, so
every ODE solver samples it (guided too); ``fewstep`` is rf++'s own few-step sampler.

References:
    Flow Straight and Fast (Liu et al., 2023), arXiv:2209.03003.
    Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320 (card 04).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from flowforge.distill.reflow import (
    ReflowLoss,
    ReflowPairs,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
)
from flowforge.losses.time_samplers import UShapedTime
from flowforge.recipes.base import (
    Recipe,
    RunData,
    TrainContext,
    Training,
    ode_sampler,
    own_sampler,
)
from flowforge.recipes.config import ODE_SOLVERS, ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.teacher import (
    TEACHER_CONFIG,
    TEACHER_FILE,
    require_teacher,
    resolve_teacher,
    teacher_key,
    training_teacher,
)

__all__ = ["PAIRS_FILE", "ReflowConfig", "ReflowRecipe"]

PAIRS_FILE = "reflow_pairs.safetensors"


@dataclass
class ReflowConfig(MethodConfig):
    """Reflow: the teacher, its pairs, and the student's time density and distance."""

    name: str = field(default="reflow", metadata=meta("the recipe: 2-rectified flow (rf++)"))
    teacher: str | None = teacher_key()
    teacher_nfe: int = field(default=100, metadata=meta("Euler steps of the teacher ODE per pair"))
    pairs: int = field(default=50000, metadata=meta("number of (noise, sample) pairs"))
    sampler: Literal["new", "euler"] = field(
        default="new", metadata=meta("fewstep: rf++ sampler re-interpolating to x_0, or Euler")
    )
    u_a: float = field(default=4.0, metadata=meta("concentration a of the U-shaped times"))
    distance: Literal["mse", "pseudo_huber"] = field(
        default="mse", metadata=meta("regression distance")
    )
    huber_c: float | None = field(
        default=None, metadata=meta("pseudo_huber scale (None: 0.00054 * dim)")
    )


class ReflowRecipe(Recipe):
    """A student velocity field trained on its teacher's noise/sample pairs."""

    name = "reflow"
    Config = ReflowConfig
    solvers = (*ODE_SOLVERS, "fewstep")
    run_files = (TEACHER_FILE, TEACHER_CONFIG, PAIRS_FILE)

    def validate(self) -> None:
        """A teacher and positive counts."""
        require_teacher(self.config)
        for key in ("teacher_nfe", "pairs"):
            if getattr(self.method, key) < 1:
                raise ConfigError(f"method.{key}={getattr(self.method, key)!r} must be >= 1.")

    def prepare(self) -> None:
        """The teacher's directory, made absolute."""
        resolve_teacher(self.config)

    def build_model(self, data: RunData) -> nn.Module:
        """The teacher's architecture (the data's field network)."""
        return data.network(self.config.model)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``ReflowLoss`` on the teacher's pairs; a fresh student starts as the teacher."""
        m = self.method
        teacher = training_teacher(self.config, data, context)
        pairs = self._pairs(teacher, data, context)
        if not context.resumed:
            init_from_teacher(model, teacher)
        loss = ReflowLoss(
            time_sampler=UShapedTime(a=m.u_a), distance=m.distance, huber_c=m.huber_c
        )
        return Training(objective=loss, data=pairs.dataset())

    def _pairs(self, teacher: nn.Module, data: RunData, context: TrainContext) -> ReflowPairs:
        """The run's pairs: generated once (seeded by ``train.seed``), then read back."""
        path = None if context.run_dir is None else context.run_dir / PAIRS_FILE
        if path is not None and path.is_file():
            return ReflowPairs.load(path)
        m = self.method
        g = torch.Generator().manual_seed(self.config.train.seed)
        labels = data.labels(m.pairs, g)
        pairs = make_reflow_pairs(
            teacher,
            m.pairs,
            tuple(data.shape),
            n_steps=m.teacher_nfe,
            solver="euler",
            cond=labels,
            generator=g,
            progress=context.main and self.config.train.progress,
        )
        if path is not None and context.main:
            pairs.save(path)
        return pairs

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """ODE solvers (guided), or rf++'s sampler for ``fewstep``."""

        def fewstep(x_0, nfe, cond):
            return reflow_sample(model, x_0, nfe, cond=cond, sampler=self.method.sampler), nfe

        return own_sampler(fewstep, ode_sampler(model, data.num_classes, sample))

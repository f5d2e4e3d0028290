"""MeanFlow (``method.name: meanflow``): average velocities u(z, r, t), 1-step samples.

A two-time network learns the average velocity over [r, t]; a share ``flow_map_ratio`` of the
examples has r != t and the JVP target of MeanFlow, the rest learn the instantaneous velocity.
Labels are dropped at ``cond_dropout`` so the null class is learned too. No teacher. Optional
dispersive regulariser on the middle layer's activations. It samples with its own jumps
(``fewstep``: one network call per step).

References:
    Mean Flows for One-step Generative Modeling (Geng et al., 2025), arXiv:2505.13447 (card 06).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from flowforge.distill.dispersive import dispersive_infonce_l2
from flowforge.distill.meanflow import MeanFlowLoss, meanflow_sample
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training, own_sampler
from flowforge.recipes.config import ConfigError, MethodConfig, ModelConfig, SampleConfig, meta
from flowforge.recipes.flow_matching import check_cond_dropout, cond_dropout_key, label_dropout

__all__ = ["MeanFlowConfig", "MeanFlowRecipe", "check_ratio", "middle_module"]


@dataclass
class MeanFlowConfig(MethodConfig):
    """MeanFlow: the two-time share, the adaptive weight, dispersion and label dropout."""

    name: str = field(default="meanflow", metadata=meta("the recipe: MeanFlow"))
    flow_map_ratio: float = field(
        default=0.25, metadata=meta("share of examples with two times r < t")
    )
    adaptive_p: float = field(default=1.0, metadata=meta("adaptive weight power p"))
    dispersive_weight: float = field(
        default=0.0, metadata=meta("weight of the dispersive (InfoNCE-L2) loss")
    )
    cond_dropout: float = cond_dropout_key()


def check_ratio(method: MethodConfig) -> None:
    """``ConfigError`` unless ``method.flow_map_ratio`` lies in [0, 1]."""
    if not 0 <= method.flow_map_ratio <= 1:
        raise ConfigError(
            f"method.flow_map_ratio={method.flow_map_ratio!r} must lie in [0, 1] (0.25 is usual)."
        )


def middle_module(model: ModelConfig) -> str:
    """Name of the middle layer of the run's network (the dispersive loss reads it).

    Example:
        >>> middle_module(ModelConfig())  # MLPField.net = [Linear, activation] * depth + [Linear]
        'net.3'
    """
    if model.arch == "unet":
        return "mid2"
    if model.arch == "dit":
        return f"blocks.{model.depth // 2}"
    return f"net.{2 * (model.depth // 2) + 1}"


class MeanFlowRecipe(Recipe):
    """A two-time average-velocity network trained from data, sampled in 1-4 jumps."""

    name = "meanflow"
    Config = MeanFlowConfig
    solvers = ("fewstep",)
    guided_solvers = ()

    def validate(self) -> None:
        """Ratio and dispersive weight in range."""
        check_ratio(self.method)
        check_cond_dropout(self.method)
        if self.method.dispersive_weight < 0:
            raise ConfigError(
                f"method.dispersive_weight={self.method.dispersive_weight!r} must be >= 0."
            )

    def build_model(self, data: RunData) -> nn.Module:
        """The data's field network with two time inputs (r, t)."""
        return data.network(self.config.model, n_times=2)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``MeanFlowLoss`` (with the dispersive term when weighted), labels dropped."""
        m = self.method
        dispersive = {}
        if m.dispersive_weight > 0:  # InfoNCE-L2 on the middle layer's activations
            dispersive = dict(
                dispersive=dispersive_infonce_l2,
                dispersive_weight=m.dispersive_weight,
                feature_modules=(middle_module(self.config.model),),
            )
        loss = MeanFlowLoss(flow_map_ratio=m.flow_map_ratio, p=m.adaptive_p, **dispersive)
        return Training(objective=label_dropout(loss, m, data.num_classes), data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """``nfe`` jumps of the average velocity."""

        return own_sampler(lambda x_0, nfe, cond: (meanflow_sample(model, x_0, nfe, cond), nfe))

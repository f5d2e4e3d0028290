"""Flow matching (``method.name: fm``): a velocity field regressed on a probability path.

Vectors and images, pixels or latents (``data.autoencoder``), labels with condition dropout
(CFG-ready), mask channels, and inpainting (``data.channels=inpaint``, known pixels pasted
back). Samples with every ODE solver, guided by CFG or RAAG.

References:
    Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.
    Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206 (time shift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from flowforge.guidance.dropout import ConditionDropout
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.losses.inpainting import InpaintingLoss
from flowforge.losses.time_samplers import (
    CosMapTime,
    LogitNormalTime,
    ModeTime,
    ShiftedTime,
    UniformTime,
    UShapedTime,
)
from flowforge.paths.affine import CondOTPath, CosinePath, PolynomialPath, VPPath
from flowforge.paths.couplings import ExactOTCoupling, IndependentCoupling, SinkhornCoupling
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training
from flowforge.recipes.config import ConfigError, MethodConfig, meta

__all__ = [
    "COUPLINGS",
    "FlowMatchingConfig",
    "FlowMatchingRecipe",
    "PATHS",
    "TIME_SAMPLERS",
    "check_cond_dropout",
    "cond_dropout_key",
    "flow_matching_loss",
    "label_dropout",
]


def cond_dropout_key() -> Any:
    """The ``method.cond_dropout`` field of the recipes that learn the null class (CFG)."""
    return field(
        default=0.1, metadata=meta("probability of dropping the label (conditional runs; CFG)")
    )


PathName = Literal["cond_ot", "cosine", "vp", "polynomial"]
TimeSamplerName = Literal["uniform", "logit_normal", "mode", "cosmap", "u_shaped"]
CouplingName = Literal["independent", "exact_ot", "sinkhorn"]


@dataclass
class FlowMatchingConfig(MethodConfig):
    """Flow matching: path, training-time density, coupling, distance, condition dropout."""

    name: str = field(default="fm", metadata=meta("the recipe: flow matching"))
    path: PathName = field(default="cond_ot", metadata=meta("probability path x_t"))
    poly_n: float = field(default=2.0, metadata=meta("exponent of the polynomial path"))
    vp_beta_min: float = field(default=0.1, metadata=meta("VP path beta_min"))
    vp_beta_max: float = field(default=20.0, metadata=meta("VP path beta_max"))
    time_sampler: TimeSamplerName = field(
        default="uniform", metadata=meta("training-time density pi(t)")
    )
    logit_loc: float = field(
        default=0.0, metadata=meta("logit_normal: mean of logit t (>0 favours data)")
    )
    logit_scale: float = field(default=1.0, metadata=meta("logit_normal: std of logit t"))
    mode_scale: float = field(default=1.29, metadata=meta("mode: heavy-tail scale s"))
    u_a: float = field(default=4.0, metadata=meta("u_shaped: concentration a"))
    time_shift: float = field(
        default=1.0, metadata=meta("SD3 shift of training times (>1 favours noise; 1: none)")
    )
    coupling: CouplingName = field(
        default="independent", metadata=meta("how noise and data are paired per minibatch")
    )
    sinkhorn_reg: float = field(
        default=0.05, metadata=meta("sinkhorn: entropic regularisation (relative)")
    )
    distance: Literal["mse", "pseudo_huber"] = field(
        default="mse", metadata=meta("regression distance")
    )
    huber_c: float | None = field(
        default=None, metadata=meta("pseudo_huber scale (None: 0.00054 * dim)")
    )
    cond_dropout: float = cond_dropout_key()
    inpaint_p_full: float = field(
        default=0.1,
        metadata=meta("inpaint: share of examples with nothing known (unconditional)"),
    )


PATHS: dict[str, Callable[[FlowMatchingConfig], object]] = {
    "cond_ot": lambda m: CondOTPath(),
    "cosine": lambda m: CosinePath(),
    "vp": lambda m: VPPath(beta_min=m.vp_beta_min, beta_max=m.vp_beta_max),
    "polynomial": lambda m: PolynomialPath(n=m.poly_n),
}
TIME_SAMPLERS: dict[str, Callable[[FlowMatchingConfig], object]] = {
    "uniform": lambda m: UniformTime(),
    "logit_normal": lambda m: LogitNormalTime(loc=m.logit_loc, scale=m.logit_scale),
    "mode": lambda m: ModeTime(scale=m.mode_scale),
    "cosmap": lambda m: CosMapTime(),
    "u_shaped": lambda m: UShapedTime(a=m.u_a),
}
COUPLINGS: dict[str, Callable[[FlowMatchingConfig], object]] = {
    "independent": lambda m: IndependentCoupling(),
    "exact_ot": lambda m: ExactOTCoupling(),
    "sinkhorn": lambda m: SinkhornCoupling(reg=m.sinkhorn_reg),
}


def check_cond_dropout(method: MethodConfig) -> None:
    """``ConfigError`` unless ``method.cond_dropout`` lies in [0, 1)."""
    if not 0 <= method.cond_dropout < 1:
        raise ConfigError(
            f"method.cond_dropout={method.cond_dropout!r} must lie in [0, 1) (0.1 is usual)."
        )


def flow_matching_loss(config: FlowMatchingConfig, num_classes: int):
    """``FlowMatchingLoss`` from the method config, with condition dropout when conditional.

    Example:
        >>> loss = flow_matching_loss(
        ...     FlowMatchingConfig(coupling="exact_ot", path="vp"), num_classes=0
        ... )
        >>> type(loss.coupling).__name__, type(loss.path).__name__
        ('ExactOTCoupling', 'VPPath')
        >>> type(flow_matching_loss(FlowMatchingConfig(), num_classes=8)).__name__
        'ConditionDropout'
    """
    time_sampler = TIME_SAMPLERS[config.time_sampler](config)
    if config.time_shift != 1.0:
        time_sampler = ShiftedTime(time_sampler, config.time_shift)
    coupling = COUPLINGS[config.coupling](config)
    loss = FlowMatchingLoss(
        path=PATHS[config.path](config),
        time_sampler=time_sampler,
        coupling=None if config.coupling == "independent" else coupling,
        distance=config.distance,
        huber_c=config.huber_c,
    )
    return label_dropout(loss, config, num_classes)


def label_dropout(loss, method: MethodConfig, num_classes: int):
    """``loss`` with labels dropped at rate ``method.cond_dropout`` (the null class K learns
    the unconditional field, for CFG); ``loss`` itself when unconditional or the rate is 0."""
    if num_classes > 0 and method.cond_dropout > 0:
        return ConditionDropout(loss, method.cond_dropout, null_value=num_classes)
    return loss


class FlowMatchingRecipe(Recipe):
    """Flow matching on vectors or images (pixels or latents), with labels, masks or holes."""

    name = "fm"
    Config = FlowMatchingConfig
    channels = ("none", "mask", "inpaint")
    latent = True

    def validate(self) -> None:
        """Time shift, condition dropout and the inpainting share."""
        m = self.method
        if not m.time_shift > 0:
            raise ConfigError(f"method.time_shift={m.time_shift!r} must be positive.")
        check_cond_dropout(m)
        if not 0 <= m.inpaint_p_full <= 1:
            raise ConfigError(f"method.inpaint_p_full={m.inpaint_p_full!r} must lie in [0, 1].")

    def build_model(self, data: RunData) -> nn.Module:
        """The data's field network (MLP, UNet or DiT) with one time input."""
        return data.network(self.config.model)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``FlowMatchingLoss`` (with condition dropout, or inpainting's random holes)."""
        loss = flow_matching_loss(self.method, data.num_classes)
        if self.config.data.channels == "inpaint":
            assert isinstance(loss, FlowMatchingLoss)
            loss = InpaintingLoss(loss, p_full=self.method.inpaint_p_full)
        return Training(objective=loss, data=data.train)

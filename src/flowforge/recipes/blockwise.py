"""Blockwise flow matching (``method.name: blockwise``): one small velocity net per time segment.

M segment networks split [0, 1]; each example only touches its own segment's net, so the whole
is a velocity field every ODE solver integrates. For vectors the segments are MLPs conditioned
on a shared feature network (``segment_guidance``); for images they are UNets/DiTs of the
model's architecture. ``fewstep`` takes the same number of steps in every segment, so its NFE
is a multiple of M.

References:
    Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167 (card 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from flowforge.distill.blockwise import BlockwiseField, BlockwiseLoss, blockwise_sample
from flowforge.distill.blockwise_nets import (
    FeatureMLP,
    FeatureMLPConfig,
    SegmentMLP,
    SegmentMLPConfig,
)
from flowforge.recipes.base import (
    Recipe,
    RunData,
    TrainContext,
    Training,
    ode_sampler,
    own_sampler,
)
from flowforge.recipes.config import (
    ODE_SOLVERS,
    ConfigError,
    MethodConfig,
    SampleConfig,
    is_image_run,
    meta,
)
from flowforge.recipes.flow_matching import check_cond_dropout, cond_dropout_key, label_dropout
from flowforge.recipes.images import ImageData

__all__ = ["BlockwiseConfig", "BlockwiseRecipe", "FEATURES"]

FEATURES = 16  # width of the shared feature network's output h


@dataclass
class BlockwiseConfig(MethodConfig):
    """Blockwise flow matching: segments, the shared feature network, label dropout."""

    name: str = field(default="blockwise", metadata=meta("the recipe: blockwise flow matching"))
    segments: int = field(default=4, metadata=meta("number of time segments M"))
    segment_guidance: bool = field(
        default=True, metadata=meta("shared feature network conditioning segments (vectors)")
    )
    cond_dropout: float = cond_dropout_key()


class BlockwiseRecipe(Recipe):
    """M segment velocity networks behind one field."""

    name = "blockwise"
    Config = BlockwiseConfig
    solvers = (*ODE_SOLVERS, "fewstep")

    def validate(self) -> None:
        """Segments >= 1; the feature network is for vectors."""
        m = self.method
        if m.segments < 1:
            raise ConfigError(f"method.segments={m.segments!r} must be >= 1.")
        check_cond_dropout(m)
        if is_image_run(self.config) and m.segment_guidance:
            raise ConfigError(
                "method.segment_guidance=true: the shared feature network of blockwise runs is "
                "an MLP for vector data; set method.segment_guidance=false for images."
            )

    def _check_segments(self, key: str, nfe: int) -> None:
        M = self.method.segments
        if nfe % M:
            raise ConfigError(
                f"{key}={nfe} is not a multiple of method.segments={M}: blockwise sampling takes "
                f"the same number of steps in every segment; use one of {[M, 2 * M, 4 * M]}."
            )

    def check_nfe(self, key: str, solver: str, nfe: int) -> None:
        """``fewstep``: a multiple of the segments; ODE solvers as usual."""
        super().check_nfe(key, solver, nfe)
        if solver == "fewstep":
            self._check_segments(key, nfe)

    def nfe_budgets(self, solver: str, nfes: list[int]) -> list[int]:
        """``fewstep``: the multiples of M in ``nfes``."""
        budgets = super().nfe_budgets(solver, nfes)
        if solver == "fewstep":
            return [n for n in budgets if n % self.method.segments == 0]
        return budgets

    def build_model(self, data: RunData) -> nn.Module:
        """M segment networks (+ the shared feature MLP for vectors)."""
        m, model = self.method, self.config.model
        if isinstance(data, ImageData):  # M networks of the model's architecture
            return BlockwiseField(lambda: data.network(model), m.segments).float()
        shared = dict(  # the time, class and activation settings of every small network
            dim=data.shape[0],
            time_embed_dim=model.time_embed_dim,
            num_classes=data.num_classes,
            class_embed_dim=model.class_embed_dim,
            activation=model.activation,
        )
        features = FEATURES if m.segment_guidance else 0
        segment = SegmentMLPConfig(
            hidden=model.hidden, depth=model.depth, feature_dim=features, **shared
        )
        guidance = None
        if m.segment_guidance:
            guidance = FeatureMLP(
                FeatureMLPConfig(
                    out_dim=features, hidden=model.hidden, depth=model.depth, **shared
                )
            )
        segments = [SegmentMLP(segment) for _ in range(m.segments)]
        return BlockwiseField(segments, guidance=guidance).float()

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """``BlockwiseLoss``, labels dropped."""
        loss = label_dropout(BlockwiseLoss(), self.method, data.num_classes)
        return Training(objective=loss, data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """ODE solvers through the segments, or ``nfe / M`` steps in each segment."""

        def fewstep(x_0, nfe, cond):
            self._check_segments("nfe", nfe)
            return blockwise_sample(model, x_0, nfe // self.method.segments, cond=cond), nfe

        return own_sampler(fewstep, ode_sampler(model, data.num_classes, sample))

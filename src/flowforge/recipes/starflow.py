"""STARFlow (``method.name: starflow``): TARFlow scaled to latents.

A learned start token instead of the shift, softplus scales with a soft clip, deep-shallow
blocks (one deep block nearest the prior, the only one that sees the label), Gaussian-product
guidance, and above all the latents of an autoencoder run (``data.autoencoder``) with a larger
noise and, optionally, a learned denoiser. Training, sampling and evaluation are TARFlow's
(``recipes/tarflow.py``); only the defaults differ. On videos (``data.name: moving_shapes``)
it is STARFlow-V: ``layers_per_block`` lists the shallow per-frame blocks, then the deep
frame-causal block; Jacobi decoding solves ``jacobi_frames`` frames together, started from the
previous frame, and the learned denoiser is causal in time (``denoiser_target: score``:
flow-score matching).

References:
    STARFlow: Scaling Latent Normalizing Flows for High-resolution Image Synthesis (Gu et al.,
    NeurIPS 2025), arXiv:2506.06276 (card 18, docs/methods.md).
    STARFlow-V (Gu et al., 2025), arXiv:2511.20462.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowforge.recipes.config import meta
from flowforge.recipes.tarflow import FlowMethodConfig, TransformerFlowRecipe

__all__ = ["STARFlowConfig", "STARFlowRecipe"]


@dataclass
class STARFlowConfig(FlowMethodConfig):
    """STARFlow: a start token, softplus scales with a soft clip, deep-shallow blocks (the deep
    one nearest the prior, the only one conditioned), Gaussian-product guidance, latents."""

    name: str = field(default="starflow", metadata=meta("the recipe: STARFlow"))
    layers_per_block: list[int] = field(
        default_factory=lambda: [1, 1, 1, 6],
        metadata=meta("layers of each block, data side first (the last, deep, nearest the prior)"),
    )
    sos: bool = field(default=True, metadata=meta("learned start token instead of the shift"))
    scale: Literal["exp", "softplus"] = field(
        default="softplus", metadata=meta("sigma = exp(a) or softplus(a + c)")
    )
    soft_clip: float | None = field(
        default=4.0, metadata=meta("a <- s tanh(a / s) with this s, or null")
    )
    cond_blocks: Literal["all", "top"] = field(
        default="top", metadata=meta("blocks that see the label: all, or the top one only")
    )
    noise_std: float = field(default=0.3, metadata=meta("sigma_n of the latents' noise"))
    guidance_rule: Literal["tarflow", "starflow"] = field(
        default="starflow", metadata=meta("guidance of the per-token Gaussians")
    )


class STARFlowRecipe(TransformerFlowRecipe):
    """STARFlow: TARFlow with a start token, softplus scales, deep-shallow blocks, latents."""

    name = "starflow"
    Config = STARFlowConfig
    data_kinds = ("vectors", "images", "videos")

"""TARFlow (``method.name: tarflow``): exact-likelihood flows of causal-transformer affine
autoregressive blocks, trained by maximum likelihood; the keys and behaviour STARFlow
(``recipes/starflow.py``) shares with it.

Vectors (tokens of ``patch_size`` features), images (patches) and, for STARFlow above all, the
latents of an autoencoder run (``data.autoencoder``). Trained on noise-augmented data; samples
are denoised by the score step (or STARFlow's learned denoiser). Two samplers: ``sequential``
(exact, a KV-cached pass per token) and ``jacobi`` (chunks of ``jacobi_block`` tokens solved by
fixed-point iteration to ``jacobi_tol``); a row's NFE counts transformer passes. Labels are
dropped at ``cond_dropout`` for guidance (``sample.guidance`` w: the flows' weight is w - 1;
TARFlow's or STARFlow's rule, ``guidance_rule``). Evaluation adds the held-out likelihood:
nats per dimension, and bits per dimension where the data lie on a grid.

References:
    Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv:2412.06329.
    STARFlow (Gu et al., NeurIPS 2025), arXiv:2506.06276 (card 18, docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from flowforge.nf.denoiser import DenoisedFlow, residual_denoiser
from flowforge.nf.objective import FlowNLLLoss, bits_per_dim, flow_log_prob, score_denoise
from flowforge.nf.tarflow import TransformerFlow, TransformerFlowConfig
from flowforge.nf.video import CausalVideoDenoiser, VideoFlow, VideoFlowConfig
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.flow_matching import check_cond_dropout, cond_dropout_key, label_dropout
from flowforge.recipes.images import ImageData
from flowforge.recipes.videos import VideoData

__all__ = ["FlowMethodConfig", "TARFlowConfig", "TARFlowRecipe", "TransformerFlowRecipe"]
__all__ += ["held_out_likelihood"]


@dataclass
class FlowMethodConfig(MethodConfig):
    """The keys of both transformer flows (the two recipes differ in their defaults)."""

    patch_size: int = field(
        default=1, metadata=meta("image patch side, or features per token of a vector")
    )
    width: int = field(default=64, metadata=meta("transformer width"))
    layers_per_block: list[int] = field(
        default_factory=lambda: [2, 2, 2, 2],
        metadata=meta("layers of each block, data side first (the last is nearest the prior)"),
    )
    head_dim: int = field(default=32, metadata=meta("channels per attention head"))
    sos: bool = field(
        default=False, metadata=meta("learned start token (STARFlow) instead of the shift")
    )
    scale: Literal["exp", "softplus"] = field(
        default="exp", metadata=meta("sigma = exp(a) (TARFlow) or softplus(a + c) (STARFlow)")
    )
    soft_clip: float | None = field(
        default=None, metadata=meta("a <- s tanh(a / s) with this s (STARFlow: 4), or null")
    )
    cond_blocks: Literal["all", "top"] = field(
        default="all", metadata=meta("blocks that see the label: all, or the top one only")
    )
    noise: Literal["gaussian", "uniform"] = field(
        default="gaussian",
        metadata=meta("training noise: gaussian (std noise_std) or uniform dequantisation"),
    )
    noise_std: float = field(
        default=0.05,
        metadata=meta("sigma_n of the Gaussian noise, or the grid spacing for uniform noise"),
    )
    bits_grid: float | None = field(
        default=None,
        metadata=meta(
            "spacing of discrete data's grid, for bits/dim (digits 8x8: 0.125; 8-bit images in "
            "[-1, 1]: 2/255); null: uniform noise's noise_std, else none"
        ),
    )
    denoise: Literal["score", "learned", "none"] = field(
        default="score",
        metadata=meta("samples: one score step, a learned denoiser (STARFlow), or none"),
    )
    denoiser_weight: float = field(
        default=1.0, metadata=meta("denoise=learned: weight of the denoiser's MSE")
    )
    cond_dropout: float = cond_dropout_key()
    guidance_rule: Literal["tarflow", "starflow"] = field(
        default="tarflow", metadata=meta("guidance of the per-token Gaussians")
    )
    annealed_guidance: bool = field(
        default=False, metadata=meta("guidance weight growing along the sequence (TARFlow)")
    )
    jacobi_block: int = field(default=16, metadata=meta("jacobi: tokens solved together"))
    jacobi_tol: float = field(
        default=1e-3, metadata=meta("jacobi: relative change that ends a chunk's iteration")
    )
    jacobi_max_iter: int = field(default=32, metadata=meta("jacobi: passes per chunk at most"))
    jacobi_frames: int = field(
        default=2, metadata=meta("videos, jacobi: frames the deep block solves together")
    )
    jacobi_init: Literal["previous", "noise"] = field(
        default="previous",
        metadata=meta("videos, jacobi: a chunk starts from the previous frame or the noise"),
    )
    denoiser_target: Literal["clean", "score"] = field(
        default="clean",
        metadata=meta(
            "denoise=learned: learn the clean data, or the flow's own score step (flow-score "
            "matching, STARFlow-V)"
        ),
    )


@dataclass
class TARFlowConfig(FlowMethodConfig):
    """TARFlow: the shift by one token, sigma = exp(a), every block conditioned."""

    name: str = field(default="tarflow", metadata=meta("the recipe: TARFlow"))


def held_out_likelihood(
    model: nn.Module, data: RunData, e, loss: FlowNLLLoss, grid: float | None = None
) -> dict:
    """The flow's likelihood of ``e.n_samples`` held-out examples in data units.

    Vectors: fresh draws of a toy (a table's rows, drawn with replacement: it has no held-out
    split), the normalisation's log-Jacobian added back. Images: the held-out split (through the
    encoder for latent runs: then the figures are the latents'); videos: the held-out videos.
    With training noise the figures are of the noise-augmented data, as trained. Data on a grid
    of spacing ``grid`` also get bits per dimension (uniform dequantisation: a bound on the
    discrete data's NLL whatever noise the flow was trained with).

    Returns:
        ``{"n", "noise", "noise_std", "nll" (nats per example), "nll_per_dim"[, "bits_per_dim"]}``
    """
    g = torch.Generator().manual_seed(e.seed)
    log_scale = 0.0  # log|d x_model / d x_data| per example
    if isinstance(data, VideoData):
        x = data.test_x[: e.n_samples]
        labels = data.test_labels[: len(x)] if data.num_classes else None
    elif isinstance(data, ImageData):
        x = data.test_x[: e.n_samples]
        if data.codec is not None:  # the flow's space: the latents of the held-out images
            x = data.codec.encode(x, generator=g)
        labels = data.test_labels[: len(x)] if data.num_classes else None
    else:
        x = data.fresh(e.n_samples, g)
        labels = None  # marginal likelihood: the null class of a conditional flow
        if data.mean is not None:
            std = torch.tensor(data.std, dtype=x.dtype)
            x = (x - torch.tensor(data.mean, dtype=x.dtype)) / std
            log_scale = -float(std.log().sum())
    x = x.float()
    D = x[0].numel()
    out = {"n": len(x), "noise": loss.noise, "noise_std": loss.noise_std}
    nll = -flow_log_prob(model, loss.augment(x, g), labels).double() - log_scale
    out["nll"] = float(nll.mean())
    out["nll_per_dim"] = out["nll"] / D
    if grid is not None and grid > 0:
        bpd = bits_per_dim(model, x, grid, labels, generator=g)
        out["bits_per_dim"] = float(bpd.mean())  # a probability per bin: no Jacobian
    return out


class TransformerFlowRecipe(Recipe):
    """What both transformer flows do; the concrete recipes below only name their config."""

    data_kinds = ("vectors", "images")
    latent = True
    own_network = True
    solvers = ("sequential", "jacobi")
    guided_solvers = ("sequential", "jacobi")
    own_cost = True

    def validate(self) -> None:
        """Sizes positive, Jacobi settings sane, label dropout in range."""
        m = self.method
        keys = ("patch_size", "width", "head_dim", "jacobi_block", "jacobi_max_iter")
        for key in (*keys, "jacobi_frames"):
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")
        if not m.layers_per_block or min(m.layers_per_block) < 1:
            raise ConfigError(
                f"method.layers_per_block={m.layers_per_block!r} must list >= 1 layer per block."
            )
        if m.width % m.head_dim:
            raise ConfigError(
                f"method.width={m.width} is not a multiple of method.head_dim={m.head_dim}."
            )
        if m.bits_grid is not None and not m.bits_grid > 0:
            raise ConfigError(f"method.bits_grid={m.bits_grid!r} must be > 0 (or null).")
        if m.noise_std < 0 or m.jacobi_tol < 0 or m.denoiser_weight < 0:
            raise ConfigError(
                "method.noise_std, method.jacobi_tol and method.denoiser_weight must be >= 0."
            )
        if m.denoise != "none" and m.noise == "uniform":
            raise ConfigError(
                "method.noise=uniform dequantises data on a grid, so there is nothing to "
                "denoise; set method.denoise=none."
            )
        check_cond_dropout(m)

    def build_model(self, data: RunData) -> nn.Module:
        """The transformer flow of the data's shape (a video flow for videos: the last of
        ``layers_per_block`` is the deep frame-causal block), and its denoiser for
        denoise=learned."""
        m = self.method
        shared = dict(
            patch_size=m.patch_size, width=m.width, head_dim=m.head_dim,
            num_classes=data.num_classes, scale=m.scale, soft_clip=m.soft_clip,
            cond_blocks=m.cond_blocks,
        )  # fmt: skip
        shape = tuple(data.shape)
        video = isinstance(data, VideoData)
        if video:
            *frame, deep = m.layers_per_block
            config = VideoFlowConfig(shape, frame_layers=tuple(frame), deep_layers=deep, **shared)
            tokens = config.frame_config().tokens
        else:
            layers = tuple(m.layers_per_block)
            config = TransformerFlowConfig(shape, layers_per_block=layers, sos=m.sos, **shared)
            tokens = config.tokens
        try:
            tokens()
        except ValueError as e:
            raise ConfigError(f"method.patch_size={m.patch_size}: {e}") from None
        flow = (VideoFlow(config) if video else TransformerFlow(config)).float()
        if m.denoise != "learned":
            return flow
        net = CausalVideoDenoiser(shape[1]) if video else residual_denoiser(shape)
        return DenoisedFlow(flow, net, target=m.denoiser_target).float()

    def _loss(self) -> FlowNLLLoss:
        m = self.method
        weight = m.denoiser_weight if m.denoise == "learned" else 0.0
        return FlowNLLLoss(m.noise, m.noise_std, denoiser_weight=weight)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """Noise-augmented NLL per dimension (with the denoiser's MSE), labels dropped."""
        loss = label_dropout(self._loss(), self.method, data.num_classes)
        return Training(objective=loss, data=data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """Decode prior noise (sequential or Jacobi, guided), then denoise."""
        m = self.method
        w = max(sample.guidance - 1.0, 0.0)  # sample.guidance is a CFG scale: 1 = none

        def sample_flow(x_0, solver, nfe, cond=None, trajectory=False):
            jacobi = solver == "jacobi"
            kwargs = dict(
                guidance=w if cond is not None else 0.0,
                rule=m.guidance_rule,
                max_iter=m.jacobi_max_iter if jacobi else None,
                tol=m.jacobi_tol if jacobi else 0.0,
            )
            if isinstance(data, VideoData):
                kwargs["frame_block"] = m.jacobi_frames if jacobi else 1
                kwargs["token_block"] = m.jacobi_block if jacobi else 1
                kwargs["init"] = m.jacobi_init
            else:
                kwargs["block_size"] = m.jacobi_block if jacobi else 1
                kwargs["annealed"] = m.annealed_guidance
            with torch.no_grad():
                out = model.decode(x_0, cond, **kwargs)
                x = out.x
                if m.denoise == "learned":
                    x = model.denoise(x)
            if m.denoise == "score" and m.noise_std > 0:
                x = score_denoise(model, x, m.noise_std, cond)
            return x, out.passes

        return sample_flow

    def evaluate(self, model, data: RunData, run_dir, step, progress: bool = True) -> dict:
        """The data's sample-quality rows, and the held-out likelihood (``likelihood``)."""
        metrics = data.evaluate(self, model, run_dir, step, progress)
        metrics["likelihood"] = self._likelihood(model, data)
        return metrics

    @torch.no_grad()
    def _likelihood(self, model: nn.Module, data: RunData) -> dict:
        m = self.method
        grid = m.bits_grid if m.bits_grid is not None else None
        if grid is None and m.noise == "uniform":
            grid = m.noise_std
        return held_out_likelihood(model, data, self.config.eval, self._loss(), grid)


class TARFlowRecipe(TransformerFlowRecipe):
    """TARFlow: affine autoregressive transformer blocks with exact likelihood."""

    name = "tarflow"
    Config = TARFlowConfig

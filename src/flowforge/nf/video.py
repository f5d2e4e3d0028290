"""STARFlow-V: a transformer autoregressive flow over video frames.

A video (F frames of C x H x W) is cut into P patch tokens per frame. Blocks on the data side
are shallow and act on each frame alone (spatial TARFlow/STARFlow blocks, the frames batched,
alternating token order); the block nearest the prior is deep and frame-causal: the tokens of
frame f get their affine parameters from frames < f (block-causal attention, full inside a
frame) and from a learned start frame for f = 0, so

    log p(x) = sum_f log p(h_f | h_<f) + sum_f log|det d h_f / d x_f|,   h_f = shallow(x_f)

is exact. Decoding solves the deep block frame by frame (one pass per frame) or by Jacobi
iteration over chunks of frames started from the previous frame (the video-aware
initialisation), then inverts the shallow blocks of all frames at once. Given first frames
(``known``) it samples the rest from the exact conditional: image-to-video (one frame) and
video continuation. ``CausalVideoDenoiser`` maps noisy samples back to clean videos with
convolutions that look only at the current and earlier frames; trained to match the flow's own
Tweedie step x~ + sigma^2 grad log p(x~) (flow-score matching), it replaces the backward pass of
the score step by one causal forward pass.

References:
    STARFlow-V (Gu et al., 2025), arXiv:2511.20462.
    STARFlow (Gu et al., NeurIPS 2025), arXiv:2506.06276.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.nf.base import NormalizingFlow
from flowforge.nf.tarflow import AutoregressiveBlock, Decoded, GuidanceRule, TransformerFlowConfig

__all__ = ["CausalVideoDenoiser", "VideoFlow", "VideoFlowConfig"]


@dataclass
class VideoFlowConfig:
    """Hyperparameters of ``VideoFlow``.

    Args:
        shape: one video, (F, C, H, W).
        patch_size: patch side (P = H W / p^2 tokens of C p^2 values per frame).
        width: transformer width.
        frame_layers: layers of each shallow per-frame block, data side first.
        deep_layers: layers of the deep frame-causal block nearest the prior.
        head_dim, expansion: attention head channels and MLP factor.
        num_classes: K classes (label K is the null class); 0: none.
        scale, soft_clip: STARFlow's softplus scales with a soft clip (or TARFlow's exp).
        cond_blocks: ``"top"``: only the deep block sees the label; ``"all"``.
    """

    shape: tuple[int, int, int, int] = (8, 1, 16, 16)
    patch_size: int = 2
    width: int = 64
    frame_layers: tuple[int, ...] = (1, 1)
    deep_layers: int = 4
    head_dim: int = 32
    expansion: int = 4
    num_classes: int = 0
    scale: Literal["exp", "softplus"] = "softplus"
    soft_clip: float | None = 4.0
    cond_blocks: Literal["all", "top"] = "top"

    def frame_config(self) -> TransformerFlowConfig:
        """The per-frame token layout and block settings (start tokens throughout)."""
        return TransformerFlowConfig(
            shape=tuple(self.shape[1:]),
            patch_size=self.patch_size,
            width=self.width,
            layers_per_block=tuple(self.frame_layers) or (1,),
            head_dim=self.head_dim,
            expansion=self.expansion,
            num_classes=self.num_classes,
            sos=True,
            scale=self.scale,
            soft_clip=self.soft_clip,
            cond_blocks=self.cond_blocks,
        )


class VideoFlow(NormalizingFlow):
    """STARFlow-V: shallow per-frame blocks, then one deep frame-causal block.

    Example:
        >>> flow = VideoFlow(VideoFlowConfig(shape=(3, 1, 4, 4), width=16, head_dim=8,
        ...                                  deep_layers=1, frame_layers=(1,)))
        >>> x = torch.randn(2, 3, 1, 4, 4)
        >>> z, logdet = flow(x)  # the identity at initialisation
        >>> torch.equal(z, x), logdet.abs().max().item()
        (True, 0.0)
    """

    def __init__(self, config: VideoFlowConfig) -> None:
        super().__init__()
        c = config
        if len(c.shape) != 4 or c.shape[0] < 2:
            raise ValueError(f"shape={c.shape} must be (F, C, H, W) with F >= 2 frames.")
        if c.deep_layers < 1:
            raise ValueError(f"deep_layers={c.deep_layers} must be >= 1.")
        self.config = c
        self.event_shape = tuple(c.shape)
        fc = c.frame_config()
        self.P, self.d = fc.tokens()
        self.frames = c.shape[0]
        self.frame_blocks = nn.ModuleList(
            AutoregressiveBlock(fc, n, flip=k % 2 == 1, conditioned=c.cond_blocks == "all")
            for k, n in enumerate(c.frame_layers)
        )
        self.deep = AutoregressiveBlock(
            fc, c.deep_layers, flip=False, conditioned=True,
            tokens=(self.frames * self.P, self.d), group=self.P,
        )  # fmt: skip

    # ---- layout ------------------------------------------------------------------------

    def _frame_tokens(self, x: Tensor) -> Tensor:
        """(B, F, C, H, W) -> (B F, P, d) patch tokens of every frame."""
        B, Fr = x.shape[:2]
        p = self.config.patch_size
        return F.unfold(x.reshape(B * Fr, *x.shape[2:]), p, stride=p).transpose(1, 2)

    def _frames(self, tokens: Tensor, B: int) -> Tensor:
        """(B F, P, d) -> (B, F, C, H, W)."""
        _, C, H, W = self.event_shape
        p = self.config.patch_size
        frames = F.fold(tokens.transpose(1, 2), (H, W), p, stride=p)
        return frames.reshape(B, -1, C, H, W)

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; this flow models videos of shape "
                f"{self.event_shape} (pass (B, {', '.join(map(str, self.event_shape))}))."
            )
        K = self.config.num_classes
        if cond is not None and K == 0:
            raise ValueError("cond was given to an unconditional flow (num_classes=0); drop it.")

    def _cond(self, cond: Tensor | None, n: int, device) -> Tensor | None:
        if self.config.num_classes == 0:
            return None
        if cond is None:
            return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)
        return cond.long()

    # ---- the flow ----------------------------------------------------------------------

    def _shallow(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Frames through the shallow blocks: ((B F, P, d) tokens, per-video logdet (B,))."""
        B, Fr = x.shape[:2]
        h = self._frame_tokens(x)
        cond_f = None if cond is None else cond.repeat_interleave(Fr)
        logdet = torch.zeros(B, dtype=x.dtype, device=x.device)
        for block in self.frame_blocks:
            h, ld = block(h, cond_f)
            logdet = logdet + ld.view(B, Fr).sum(1)
        return h, logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Videos (B, F, C, H, W) -> (z of the same shape, log|det dz/dx| (B,))."""
        self._check(x, cond)
        B = len(x)
        cond = self._cond(cond, B, x.device)
        h, logdet = self._shallow(x, cond)
        h, ld = self.deep(h.reshape(B, self.frames * self.P, self.d), cond)
        return self._frames(h.reshape(B * self.frames, self.P, self.d), B), logdet + ld

    def decode(
        self,
        z: Tensor,
        cond: Tensor | None = None,
        *,
        guidance: float = 0.0,
        rule: GuidanceRule = "starflow",
        frame_block: int = 1,
        token_block: int = 1,
        max_iter: int | None = None,
        tol: float = 0.0,
        init: Literal["noise", "previous"] = "previous",
        known: Tensor | None = None,
    ) -> Decoded:
        """Latent -> videos, with the transformer passes it took.

        Args:
            z: (B, F, C, H, W) latent.
            cond: (B,) labels (None: the null class of a conditional flow).
            guidance, rule: guidance weight w (0: none) and rule of the per-token Gaussians.
            frame_block: frames the deep block solves together (1: frame by frame, exact in
                one pass per frame; more: Jacobi iteration over the chunk).
            token_block: tokens the shallow blocks solve together (1: sequential).
            max_iter: Jacobi passes per chunk at most (default: the chunk's length).
            tol: stop a chunk once its relative change is at most ``tol``.
            init: Jacobi chunks start from the previous frame (``"previous"``) or the noise.
            known: (B, K, C, H, W) first frames to continue (image-to-video: K = 1); they
                are returned as given and the rest sampled from p(x_K.. | x_<K).

        Returns:
            ``Decoded(x, passes)``.
        """
        self._check(z, cond)
        if guidance > 0 and (cond is None or self.config.num_classes == 0):
            raise ValueError(
                f"guidance={guidance} needs a class-conditional flow and its labels (cond); "
                "pass cond to a flow with num_classes > 0, or set guidance=0."
            )
        B, Fr, P, d = len(z), self.frames, self.P, self.d
        cond = self._cond(cond, B, z.device)
        h = self._frame_tokens(z).reshape(B, Fr * P, d)
        given = None
        if known is not None:
            if known.shape[0] != B or tuple(known.shape[2:]) != self.event_shape[1:]:
                raise ValueError(
                    f"known has shape {tuple(known.shape)}; pass (B={B}, K, "
                    f"{', '.join(map(str, self.event_shape[1:]))}) with K < {Fr} frames."
                )
            if not 1 <= known.shape[1] < Fr:
                raise ValueError(f"known holds {known.shape[1]} frames; give 1..{Fr - 1}.")
            given, _ = self._shallow(known.to(z.dtype), cond)
            given = given.reshape(B, -1, d)
        limit = max_iter if max_iter is not None else frame_block
        h, passes = self.deep.decode(
            h, cond, guidance, rule, False, frame_block, limit, tol, known=given, init=init
        )
        h = h.reshape(B * Fr, P, d)
        cond_f = None if cond is None else cond.repeat_interleave(Fr)
        limit = max_iter if max_iter is not None else token_block
        for block in reversed(self.frame_blocks):
            h, n = block.decode(h, cond_f, guidance, rule, False, token_block, limit, tol)
            passes += n
        x = self._frames(h, B)
        if known is not None:
            x = torch.cat([known.to(x.dtype), x[:, known.shape[1] :]], dim=1)
        return Decoded(x, passes)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Latent -> videos by exact frame-by-frame, token-by-token decoding."""
        return self.decode(z, cond).x


class _CausalConv(nn.Module):
    """A (k_t, 3, 3) convolution over (B, C, F, H, W) padded on the past side of time only."""

    def __init__(self, c_in: int, c_out: int, k_t: int) -> None:
        super().__init__()
        self.k_t = k_t
        self.conv = nn.Conv3d(c_in, c_out, (k_t, 3, 3), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 0, 0, 0, self.k_t - 1, 0)))


class CausalVideoDenoiser(nn.Module):
    """r(x~) for videos (B, F, C, H, W): three convolutions that see the current frame and the
    ``k_t - 1`` before it per layer (nothing later); the last starts at zero (x^ = x~ at first).

    Example:
        >>> net = CausalVideoDenoiser(1, width=8)
        >>> x = torch.randn(2, 4, 1, 6, 6)
        >>> net(x).abs().max().item()
        0.0
    """

    def __init__(self, channels: int, width: int = 16, k_t: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _CausalConv(channels, width, k_t), nn.SiLU(),
            _CausalConv(width, width, k_t), nn.SiLU(),
            _CausalConv(width, channels, 1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].conv.weight)
        nn.init.zeros_(self.net[-1].conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)

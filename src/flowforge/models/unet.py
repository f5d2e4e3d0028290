"""A small DDPM/ADM-style UNet velocity field for images, with image and class conditions.

Full definition in one file, like nanoGPT's ``model.py``:

    emb = MLP(e(t)) + c(y)                               time and class embedding, (B, E)
    h   = conv_in([x, m])                                x and the concatenated condition m
    down: per level, ``num_res_blocks`` ResBlocks, then a stride-2 conv (except the last level)
    mid:  ResBlock, self-attention (optional), ResBlock
    up:   per level, ``num_res_blocks + 1`` ResBlocks on [h, skip], then nearest x2 + conv
    v   = conv_out(SiLU(GroupNorm(h)))                   zero-initialised, so v = 0 at init

ResBlock: h + conv(SiLU(GN(conv(SiLU(GN(h)))) * (1 + s) + b)), with (s, b) = Linear(SiLU(emb))
(ADM's scale-shift norm) and the second conv zero-initialised.

The condition ``cond`` of the field contract is one of: None; an integer tensor (B,) of class
labels in [0, K] (K = ``num_classes`` is the null class of classifier-free guidance); a float
tensor (B, cond_channels, H, W) concatenated to x (masks, masked images); or an ``ImageCond``
holding both. ``DiTField`` (``models/dit.py``) reads ``cond`` the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.models.layers import ImageCond, SinusoidalEmbedding, check_image, parse_image_cond

__all__ = ["UNetConfig", "UNetField"]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)  # 8 groups where channels allow


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.conv1(F.silu(self.norm1(h)))  # (B, C_out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        r = self.norm2(r) * (1 + scale) + shift  # ADM scale-shift norm
        r = self.conv2(self.drop(F.silu(r)))
        return self.skip(h) + r


class _Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        self.heads, self.norm = heads, _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        qkv = self.qkv(self.norm(h)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, heads, HW, C / heads)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return h + self.proj(a.transpose(-1, -2).reshape(B, C, H, W))


@dataclass
class UNetConfig:
    """Hyperparameters of ``UNetField``.

    Args:
        in_channels: C, channels of x.
        out_channels: channels of the output; None means ``in_channels`` (a velocity field).
        cond_channels: channels concatenated to x (masks, masked images); 0 for none.
        base_channels: width of the first level.
        channel_mults: width multipliers per level; inputs need H, W divisible by
            2^(len(channel_mults) - 1).
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_levels: indices of levels (0 = full resolution) with self-attention after
            each ResBlock, independent of the input size.
        mid_attention: self-attention between the two middle ResBlocks.
        num_classes: K labels for class conditioning; 0 builds a model without labels.
        dropout: dropout probability inside the ResBlocks.
        time_embed_dim: E, width of the time (and class) embedding.
        n_times: times per example; t is (B,) for 1, else (B, n_times) (a flow map's (s, t)),
            each time with its own sinusoidal features, concatenated before the time MLP.
        time_scale: factor on t before the sinusoids (1000: diffusion-step frequencies); a
            small value (e.g. 1) gives smooth features, which methods differentiating the
            network in t (MeanFlow's JVP target) need.

    Example:
        >>> cfg = UNetConfig(base_channels=16, channel_mults=(1, 2), num_classes=10)
        >>> UNetField(cfg)(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([3, 10])).shape
        torch.Size([2, 1, 8, 8])
    """

    in_channels: int = 1
    out_channels: int | None = None
    cond_channels: int = 0
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    mid_attention: bool = True
    num_classes: int = 0
    dropout: float = 0.0
    time_embed_dim: int = 128
    n_times: int = 1
    time_scale: float = 1000.0


class UNetField(nn.Module):
    """A UNet velocity field ``v(x, t, cond)`` for images (B, C, H, W).

    Time enters through sinusoidal features and an MLP, class labels through a learned table of
    K + 1 rows (row K is the null class); their sum scales and shifts every ResBlock's
    normalised activations. Condition channels are concatenated to x before the first conv.
    The output conv is zero-initialised, so the initial field is exactly 0.

    Args:
        config: the ``UNetConfig``.

    References:
        Denoising Diffusion Probabilistic Models (Ho et al., 2020), arXiv:2006.11239.
        Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021),
        arXiv:2105.05233 (scale-shift norm, attention, zero-initialised output layers).
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598 (null class).

    Example:
        >>> net = UNetField(UNetConfig(base_channels=8, cond_channels=1))
        >>> x, m = torch.randn(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        >>> net(x, torch.rand(2), m).abs().max().item()  # zero-initialised output layer
        0.0
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        c = config
        for name in (
            "in_channels",
            "base_channels",
            "num_res_blocks",
            "time_embed_dim",
            "n_times",
        ):
            if getattr(c, name) < 1:
                raise ValueError(f"UNetConfig.{name}={getattr(c, name)!r} must be >= 1.")
        for name in ("cond_channels", "num_classes"):
            if getattr(c, name) < 0:
                raise ValueError(
                    f"UNetConfig.{name}={getattr(c, name)!r} must be >= 0 (0 disables it)."
                )
        if c.out_channels is not None and c.out_channels < 1:
            raise ValueError(
                f"UNetConfig.out_channels={c.out_channels!r} must be >= 1, or None for "
                "in_channels."
            )
        if not c.channel_mults or any(m < 1 for m in c.channel_mults):
            raise ValueError(
                f"UNetConfig.channel_mults={c.channel_mults!r} must be a non-empty tuple of "
                "positive ints, e.g. (1, 2)."
            )
        bad = [i for i in c.attention_levels if not 0 <= i < len(c.channel_mults)]
        if bad:
            raise ValueError(
                f"UNetConfig.attention_levels={c.attention_levels!r} has level {bad[0]}; levels "
                f"are 0..{len(c.channel_mults) - 1} (one per entry of channel_mults)."
            )
        if not 0 <= c.dropout < 1:
            raise ValueError(f"UNetConfig.dropout={c.dropout!r} must be in [0, 1).")
        self.config = c
        E = c.time_embed_dim
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(E, scale=c.time_scale),
            nn.Linear(c.n_times * E, E),
            nn.SiLU(),
            nn.Linear(E, E),
        )
        self.class_embed = nn.Embedding(c.num_classes + 1, E) if c.num_classes > 0 else None
        widths = [c.base_channels * m for m in c.channel_mults]
        self.conv_in = nn.Conv2d(c.in_channels + c.cond_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [widths[0]], widths[0]
        for level, w in enumerate(widths):
            for _ in range(c.num_res_blocks):
                attn = _Attention(w) if level in c.attention_levels else nn.Identity()
                self.down.append(nn.ModuleList([_ResBlock(ch, w, E, c.dropout), attn]))
                skips.append(ch := w)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = _ResBlock(ch, ch, E, c.dropout)
        self.mid_attn = _Attention(ch) if c.mid_attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, E, c.dropout)
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(c.num_res_blocks + 1):
                attn = _Attention(w) if level in c.attention_levels else nn.Identity()
                self.up.append(nn.ModuleList([_ResBlock(ch + skips.pop(), w, E, c.dropout), attn]))
                ch = w
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after nearest x2 upsampling
        assert not skips, "every skip connection is consumed on the way up"
        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, c.out_channels or c.in_channels, 3, padding=1))

    @property
    def null_class(self) -> int:
        """The label of the null (unconditional) class, ``num_classes``."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | ImageCond | None = None) -> Tensor:
        """Args: x: (B, C, H, W); t: (B,) or (B, n_times); cond: labels (B,), channels
        (B, C_c, H, W), ``ImageCond`` or None (see the module docstring).

        Returns: (B, out_channels, H, W) velocity.
        """
        c = self.config
        check_image(x, t, c.in_channels, "UNetConfig", c.n_times)
        f = 2 ** (len(c.channel_mults) - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"x has spatial size {tuple(x.shape[2:])}, not divisible by {f} = 2^(levels - 1) "
                f"for UNetConfig.channel_mults={c.channel_mults}; pad or resize the images to "
                f"a multiple of {f}, or use fewer levels."
            )
        labels, channels = parse_image_cond(cond, x, c.num_classes, c.cond_channels, "UNetConfig")
        emb = self.time_embed(t.to(x.dtype))  # (B, E)
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels).to(x.dtype)
        h = self.conv_in(x if channels is None else torch.cat([x, channels], dim=1))
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.Conv2d):
                h = layer(h)  # stride-2 downsampling
            else:
                h = layer[1](layer[0](h, emb))
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.Conv2d):
                h = layer(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            else:
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), emb))
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H, W)

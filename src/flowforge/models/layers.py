"""Building blocks shared by the model files: time embeddings, activations, image conditions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.utils.checks import check_choice
from flowforge.utils.tensor import wider_float

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ImageCond",
    "SinusoidalEmbedding",
    "check_times",
    "check_image",
    "make_activation",
    "parse_image_cond",
]

Activation = Literal["silu", "relu", "gelu", "selu"]
ACTIVATIONS: tuple[str, ...] = ("silu", "relu", "gelu", "selu")


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation module for one of the ``Activation`` choices.

    ``"selu"`` is there so an ``MLPField`` can equal torchcfm's ``MLP`` layer for layer.

    Args:
        name: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Returns:
        The matching ``nn.Module`` (parameter-free).

    Example:
        >>> make_activation("silu")
        SiLU()
    """
    check_choice("activation", name, ACTIVATIONS)
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    return nn.SELU()


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal features of a time t in [0, 1].

    emb(t) = [cos(s t f_0), ..., cos(s t f_{h-1}), sin(s t f_0), ..., sin(s t f_{h-1})],
    f_i = max_period^(-i / h),  h = dim // 2,  s = ``scale`` (1000 by default),

    with one zero column appended when ``dim`` is odd. Times in [0, 1] are multiplied by ``scale``
    first so that the fastest frequency (f_0 = 1) turns through about 160 periods over [0, 1],
    as with the integer diffusion steps in [0, 1000) these features were designed for; without
    the scale every feature would be nearly linear in t. The layer has no parameters or buffers
    (frequencies are recomputed in float32 or wider on each call, so ``model.half()`` cannot
    round them), and adds nothing to a ``state_dict``.

    Several times per example (a flow map's start and end, MeanFlow's (r, t)) pass as a
    ``(B, n_times)`` matrix; each column gets its own ``dim`` features, concatenated in column
    order to ``(B, n_times * dim)``.

    Args:
        dim: number of output features per time (>= 1).
        max_period: the slowest period, in units of scaled time.
        scale: the factor applied to t before the sinusoids.

    References:
        Attention Is All You Need (Vaswani et al., 2017), arXiv:1706.03762, Sec. 3.5.
        Denoising Diffusion Probabilistic Models (Ho et al., 2020), arXiv:2006.11239.

    Example:
        >>> emb = SinusoidalEmbedding(4)
        >>> emb(torch.zeros(3)).tolist()[0]  # cos(0) = 1, sin(0) = 0
        [1.0, 1.0, 0.0, 0.0]
        >>> emb(torch.zeros(3, 2)).shape  # two times per example
        torch.Size([3, 8])
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive number of features; pass dim >= 1.")
        if max_period <= 1:
            raise ValueError(
                f"max_period={max_period!r} must be > 1 (10000.0 is the usual value)."
            )
        self.dim, self.max_period, self.scale = dim, max_period, scale

    def forward(self, t: Tensor) -> Tensor:
        """Args: t: (B,) or (B, n) times. Returns: (B, dim) or (B, n * dim), t's float dtype."""
        if t.dim() == 2:
            return torch.cat([self(t[:, k]) for k in range(t.shape[1])], dim=-1)
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        wide = wider_float(dtype)
        half = self.dim // 2
        i = torch.arange(half, device=t.device, dtype=wide)
        freqs = torch.exp(-math.log(self.max_period) * i / half)  # (h,)
        args = self.scale * t.to(wide)[:, None] * freqs  # (B, h)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2h)
        if self.dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # (B, dim)
        return emb.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"


@dataclass(frozen=True)
class ImageCond:
    """Class labels and channel-concatenated images conditioning one batch of an image field.

    The null condition for classifier-free guidance is ``ImageCond(labels=full(K), channels)``:
    labels set to the null class K, the concatenated channels kept.

    Args:
        labels: (B,) integer labels in [0, K] (K is the null class), or None (all null).
        channels: (B, cond_channels, H, W) float images concatenated to x, or None.

    Example:
        >>> c = ImageCond(labels=torch.tensor([0, 1]), channels=torch.zeros(2, 1, 8, 8))
        >>> c.channels.shape
        torch.Size([2, 1, 8, 8])
    """

    labels: Tensor | None = None
    channels: Tensor | None = None


def parse_image_cond(
    cond: Tensor | ImageCond | None,
    x: Tensor,
    num_classes: int,
    cond_channels: int,
    config_name: str,
) -> tuple[Tensor | None, Tensor | None]:
    """Validated (labels, channels) of an image field's ``cond``.

    Args:
        cond: None, (B,) integer labels, (B, cond_channels, H, W) float channels or ``ImageCond``.
        x: (B, C, H, W) the field's input.
        num_classes: K; 0 means the model takes no labels.
        cond_channels: channels concatenated to x; 0 means none.
        config_name: the config class named in error messages (``"UNetConfig"``).

    Returns:
        labels (B,) long (null class K where none were given) or None when K = 0, and channels
        (B, cond_channels, H, W) in x's dtype or None when cond_channels = 0.

    Example:
        >>> labels, ch = parse_image_cond(None, torch.zeros(2, 1, 8, 8), 10, 0, "UNetConfig")
        >>> labels.tolist(), ch
        ([10, 10], None)
    """
    if cond is None or isinstance(cond, ImageCond):
        labels, channels = (None, None) if cond is None else (cond.labels, cond.channels)
    elif isinstance(cond, Tensor):
        is_float = cond.is_floating_point() or cond.is_complex()
        labels, channels = (None, cond) if is_float else (cond, None)
    else:
        raise TypeError(
            f"cond has type {type(cond).__name__}; pass None, integer labels (B,), float "
            "channels (B, cond_channels, H, W) or an ImageCond(labels, channels)."
        )
    B, K = x.shape[0], num_classes
    if labels is not None and K == 0:
        raise ValueError(
            f"class labels were given but the model is unconditional ({config_name}."
            "num_classes=0); drop the labels or build the model with num_classes > 0."
        )
    if K > 0:
        if labels is None:
            labels = torch.full((B,), K, dtype=torch.long, device=x.device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(
                f"labels have dtype {labels.dtype}; pass integer class labels (torch.long) "
                f"in [0, {K}]."
            )
        if labels.shape != (B,):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)}; pass one label per example, "
                f"shape ({B},)."
            )
        bad = (labels < 0) | (labels > K)
        if bad.any():
            value = labels[bad][0].item()
            raise ValueError(
                f"cond contains label {value}, outside the valid range [0, {K}] (labels "
                f"0..{K - 1} are classes, {K} is the null class); remap the labels into it."
            )
        labels = labels.long()
    want = (B, cond_channels, *x.shape[2:])
    if channels is None and cond_channels > 0:
        raise ValueError(
            f"the model concatenates {config_name}.cond_channels={cond_channels} condition "
            f"channels to x but none were given; pass cond of shape {want} or "
            "ImageCond(labels, channels)."
        )
    if channels is not None:
        if cond_channels == 0:
            raise ValueError(
                f"condition channels of shape {tuple(channels.shape)} were given but the model "
                f"takes none ({config_name}.cond_channels=0); drop them or rebuild the model "
                f"with cond_channels={channels.shape[1] if channels.dim() > 1 else 1}."
            )
        if tuple(channels.shape) != want:
            raise ValueError(
                f"condition channels have shape {tuple(channels.shape)} but x has shape "
                f"{tuple(x.shape)} and {config_name}.cond_channels={cond_channels}; pass "
                f"channels of shape {want}."
            )
        channels = channels.to(x.dtype)
    return labels, channels


def check_image(
    x: Tensor, t: Tensor, in_channels: int, config_name: str, n_times: int = 1
) -> None:
    """Raise ``ValueError`` unless x is (B, in_channels, H, W) and t holds n_times per example.

    Example:
        >>> check_image(torch.zeros(2, 1, 8, 8), torch.zeros(2), 1, "UNetConfig")
    """
    if x.dim() != 4:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; pass a batch of images (B, {in_channels}, H, W) "
            "(use x[None] for a single image)."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"x has {x.shape[1]} channels (shape {tuple(x.shape)}) but the model was built with "
            f"{config_name}.in_channels={in_channels}; pass {in_channels} channels or rebuild "
            f"the model with in_channels={x.shape[1]}."
        )
    check_times(t, x.shape[0], n_times, config_name)


def check_times(t: Tensor, batch: int, n_times: int, config_name: str) -> None:
    """Raise ``ValueError`` unless t is (batch,) for n_times = 1, else (batch, n_times).

    Example:
        >>> check_times(torch.zeros(4, 2), 4, 2, "MLPConfig")
    """
    want = (batch,) if n_times == 1 else (batch, n_times)
    if tuple(t.shape) != want:
        how = f"e.g. t.expand({batch})" if n_times == 1 else "e.g. torch.stack([s, t], dim=-1)"
        raise ValueError(
            f"t has shape {tuple(t.shape)} but x has batch size {batch} and the model takes "
            f"{config_name}.n_times={n_times} time(s) per example; pass t of shape {want} "
            f"({how})."
        )

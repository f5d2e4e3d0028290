"""Symmetrical flow matching (SymmFlow): one field, two opposite flows on [image, semantic map].

With t ~ U(0, 1), sigma_min = 1e-4 and independent eps_x, eps_y ~ N(0, I), in flowforge time:

    x_t = (1 - (1 - sigma_min) t) eps_x + t x        image: noise (t = 0) -> image (t = 1)
    y_t = (1 - (1 - sigma_min) t) y + t eps_y        map:   mask  (t = 0) -> noise (t = 1)
    u_x = x - (1 - sigma_min) eps_x = d x_t / dt
    u_y = eps_y - (1 - sigma_min) y = d y_t / dt
    [v_x, v_y] = v_theta(concat(x_t, y_t), t)
    L = w_img mean (v_x - u_x)^2 + (1 - w_img) mean (v_y - u_y)^2

Integrating forward from [eps_x, y] generates an image from a mask; integrating backward from
[x, eps_y] recovers the mask (``flowforge.solvers.symmflow``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.losses.distances import mse
from flowforge.losses.time_samplers import UniformTime
from flowforge.protocols import TimeSampler
from flowforge.utils.tensor import expand_like, randn_like_gen

__all__ = ["SymmFlowLoss", "channels_to_masks", "masks_to_channels"]


class SymmFlowLoss:
    """SymmFlow's objective: joint flow matching of an image and its semantic map, per example.

        y <- y + beta (U(0, 1) - 0.5) / 127.5                        (mask dequantisation)
        x_t = (1 - (1 - s) t) eps_x + t x,   u_x = x - (1 - s) eps_x
        y_t = (1 - (1 - s) t) y + t eps_y,   u_y = eps_y - (1 - s) y
        [v_x, v_y] = model(concat(x_t, y_t), t)
        L = w mean_x (v_x - u_x)^2 + (1 - w) mean_y (v_y - u_y)^2

    with s = ``sigma_min`` and w = ``image_weight``. The two halves run in opposite time
    directions (the map becomes noise at t = 1, which keeps generation diverse) and use
    independent noises. The channels are split by explicit indices, ``[:, :x_channels]`` and
    ``[:, x_channels:]``, so image and map may have different channel counts.

    The model is called as ``model(state, t)`` with ``state`` of shape (B, Cx + Cy, ...) and
    must return a velocity of that shape. Random draws, all from ``generator`` and in this order:
    t (via ``time_sampler``), eps_x, eps_y, then the dequantisation uniforms (skipped when
    ``dequant_beta = 0``).

    Args:
        x_channels: Cx, the number of image channels (dim 1 of ``x_1``).
        sigma_min: s in [0, 1), the noise left at the image end (1e-4 in the paper).
        image_weight: w in [0, 1] (0.9 in MedSymmFlow, 0.7 in the paper's runs).
        dequant_beta: beta >= 0 (15 in MedSymmFlow; 10 / 6 / 4 in the paper's runs; 0 disables).
        time_sampler: pi(t), a callable ``(n, generator, device, dtype) -> (n,)``; default
            ``UniformTime()``.

    References:
        Symmetrical Flow Matching: Unified Image Generation, Segmentation, and Classification
        with Score-Based Generative Models (Caetano et al., 2025), arXiv:2506.10634
        (code: caetas/SymmetricFlow, caetas/MedSymmFlow).

    Example:
        >>> loss = SymmFlowLoss(x_channels=2)
        >>> field = lambda state, t: torch.zeros_like(state)
        >>> x, y = torch.randn(8, 2), masks_to_channels(torch.arange(8) % 3, 3)  # (8, 2), (8, 3)
        >>> loss(field, x, y, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        x_channels: int,
        sigma_min: float = 1e-4,
        image_weight: float = 0.9,
        dequant_beta: float = 15.0,
        time_sampler: TimeSampler | None = None,
    ) -> None:
        if isinstance(x_channels, bool) or not isinstance(x_channels, numbers.Integral):
            raise TypeError(
                f"x_channels={x_channels!r} must be an int, the number of image channels "
                "(dim 1 of x_1), e.g. x_channels=3 for RGB or 2 for 2-D points."
            )
        if x_channels < 1:
            raise ValueError(
                f"x_channels={x_channels!r} must be >= 1 (the number of image channels)."
            )
        if not 0 <= sigma_min < 1:
            raise ValueError(f"sigma_min={sigma_min!r} must lie in [0, 1); the paper uses 1e-4.")
        if not 0 <= image_weight <= 1:
            raise ValueError(
                f"image_weight={image_weight!r} must lie in [0, 1] (the weight of the image "
                "half; 1 - image_weight weighs the semantic half); MedSymmFlow uses 0.9."
            )
        if not dequant_beta >= 0:
            raise ValueError(
                f"dequant_beta={dequant_beta!r} must be >= 0 (MedSymmFlow uses 15; 0 disables "
                "mask dequantisation)."
            )
        self.x_channels = int(x_channels)
        self.sigma_min = float(sigma_min)
        self.image_weight = float(image_weight)
        self.dequant_beta = float(dequant_beta)
        self.time_sampler = UniformTime() if time_sampler is None else time_sampler

    def __call__(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: ``model(state, t) -> (B, Cx + Cy, ...)``; x_1: (B, Cx, ...) images;
        cond: (B, Cy, ...) semantic maps y, float channels in [-1, 1] (see
        :func:`masks_to_channels`), same batch and trailing shape as x_1; generator: for t, the
        noises and the dequantisation.

        Returns: (B,) per-example losses.
        """
        self._check(x_1, cond)
        x = x_1
        y = cond.to(x.dtype)
        B, Cx = x.shape[0], self.x_channels
        s = self.sigma_min
        t = self.time_sampler(B, generator=generator, device=x.device, dtype=x.dtype)  # (B,)
        eps_x = randn_like_gen(x, generator)  # (B, Cx, ...), independent of eps_y
        eps_y = randn_like_gen(y, generator)  # (B, Cy, ...)
        if self.dequant_beta > 0:
            u = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = y + self.dequant_beta * (u - 0.5) / 127.5  # dequantise the mask
        t_ = expand_like(t, x)  # (B, 1, ..., 1)
        x_t = (1 - (1 - s) * t_) * eps_x + t_ * x  # noise -> image
        y_t = (1 - (1 - s) * t_) * y + t_ * eps_y  # mask -> noise (reverse direction)
        u_x = x - (1 - s) * eps_x
        u_y = eps_y - (1 - s) * y  # not y - eps_y: the map flows toward noise
        state = torch.cat([x_t, y_t], dim=1)  # (B, Cx + Cy, ...)
        v = model(state, t)
        if v.shape != state.shape:
            raise ValueError(
                f"the model returned shape {tuple(v.shape)} for a state of shape "
                f"{tuple(state.shape)} (image channels {Cx} + semantic channels {y.shape[1]}); "
                "its output must match its input: one velocity per channel."
            )
        v_x, v_y = v[:, :Cx], v[:, Cx:]
        w = self.image_weight
        return w * mse(v_x, u_x) + (1 - w) * mse(v_y, u_y)  # (B,)

    def _check(self, x_1: Tensor, cond: Tensor | None) -> None:
        if cond is None:
            raise ValueError(
                "cond is None; SymmFlowLoss needs the semantic map y as cond, shape (B, Cy, ...) "
                "in [-1, 1] (e.g. masks_to_channels(masks, num_classes))."
            )
        for name, value in (("x_1", x_1), ("cond", cond)):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
                raise TypeError(
                    f"{name} has type {kind}; pass a floating-point tensor (convert integer "
                    "masks or labels with masks_to_channels(masks, num_classes))."
                )
            if value.dim() < 2:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)}; pass (B, C, ...) with channels on "
                    "dim 1 (2-D points are (B, D))."
                )
        if x_1.shape[1] != self.x_channels:
            raise ValueError(
                f"x_1 has {x_1.shape[1]} channels (shape {tuple(x_1.shape)}) but the loss was "
                f"built with x_channels={self.x_channels}; build SymmFlowLoss("
                f"x_channels={x_1.shape[1]}) or pass images with {self.x_channels} channels."
            )
        if cond.shape[0] != x_1.shape[0] or cond.shape[2:] != x_1.shape[2:]:
            raise ValueError(
                f"cond has shape {tuple(cond.shape)} but x_1 has shape {tuple(x_1.shape)}; the "
                "semantic map needs the same batch size and spatial shape as the image (only "
                "the channel count, dim 1, may differ)."
            )


def masks_to_channels(masks: Tensor, num_classes: int, dtype: torch.dtype | None = None) -> Tensor:
    """One-hot channels scaled to [-1, 1]: y[:, k] = 2 [masks == k] - 1.

    Integer masks (B, H, W) become maps (B, K, H, W); labels (B,) become vectors (B, K) (expand
    them to a map, ``y[..., None, None].expand(-1, -1, H, W)``, to pair labels with images).

    Args:
        masks: (B, ...) integer class indices in [0, K).
        num_classes: K.
        dtype: float dtype of the result; default ``torch.get_default_dtype()``.

    Returns:
        (B, K, ...) with +1 on the true class and -1 elsewhere.

    References:
        Symmetrical Flow Matching (Caetano et al., 2025), arXiv:2506.10634.

    Example:
        >>> masks_to_channels(torch.tensor([2, 0]), 3).tolist()
        [[-1.0, -1.0, 1.0], [1.0, -1.0, -1.0]]
    """
    if not isinstance(masks, Tensor) or masks.is_floating_point() or masks.is_complex():
        kind = masks.dtype if isinstance(masks, Tensor) else type(masks).__name__
        raise TypeError(f"masks has type {kind}; pass integer class indices (torch.long).")
    if masks.dtype == torch.bool:
        masks = masks.long()
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes={num_classes!r} must be an int >= 1.")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be >= 1.")
    if masks.dim() < 1:
        raise ValueError("masks is a 0-d tensor; pass a batch (B,) or (B, H, W).")
    if masks.numel() and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(
            f"masks holds values in [{masks.min().item()}, {masks.max().item()}]; class "
            f"indices must lie in [0, {num_classes - 1}] (num_classes={num_classes})."
        )
    one_hot = torch.nn.functional.one_hot(masks.long(), num_classes)  # (B, ..., K)
    y = one_hot.movedim(-1, 1).to(dtype or torch.get_default_dtype())  # (B, K, ...)
    return 2 * y - 1


def channels_to_masks(y: Tensor) -> Tensor:
    """Decode semantic channels to class indices by argmax over the channel dim 1.

    Args:
        y: (B, K, ...) semantic channels, e.g. from ``symmflow_segment``.

    Returns:
        (B, ...) long class indices.

    References:
        Symmetrical Flow Matching (Caetano et al., 2025), arXiv:2506.10634.

    Example:
        >>> channels_to_masks(masks_to_channels(torch.tensor([[1, 0], [2, 2]]), 3)).tolist()
        [[1, 0], [2, 2]]
    """
    if not isinstance(y, Tensor) or y.dim() < 2:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y is {shape}; pass (B, K, ...) with class channels on dim 1.")
    return y.argmax(dim=1)

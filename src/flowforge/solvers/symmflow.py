"""SymmFlow samplers: one joint field on [image, semantic map], integrated in either direction.

The field v(state, t) of ``flowforge.losses.symmflow.SymmFlowLoss`` moves the image channels
noise (t = 0) -> image (t = 1) and the semantic channels mask (t = 0) -> noise (t = 1), so

    semantic synthesis:  [eps_x, y] at t = 0  --forward-->   [x, .] at t = 1   (read x)
    segmentation:        [x, eps_y] at t = 1  --backward-->  [., y] at t = 0   (read y)

Integrating forward from [x, eps_y] is wrong: the map is only recovered backward in time.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import ODEMethod, sample_ode
from flowforge.utils.tensor import randn_like_gen, wider_float

__all__ = ["JointField", "symmflow_classify", "symmflow_generate", "symmflow_segment"]

JointField = Callable[[Tensor, Tensor], Tensor]  # field(state, t) -> d state / dt


def _check_input(name: str, value: Tensor) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() < 2:
        kind = (
            f"{value.dtype} tensor of shape {tuple(value.shape)}"
            if isinstance(value, Tensor)
            else type(value).__name__
        )
        raise ValueError(
            f"{name} is a {kind}; pass a floating-point (B, C, ...) tensor with channels on "
            "dim 1 (2-D points are (B, D); integer masks go through masks_to_channels)."
        )


def _check_channels(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name}={value!r} must be an int >= 1, the channel count of that half of the "
            "state (the x_channels / Cy the model was trained with)."
        )


def _joint(field: JointField) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """Adapt ``field(state, t)`` to the solvers' ``field(x, t, cond)`` call."""

    def velocity(state: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return field(state, t)

    return velocity


def symmflow_generate(
    field: JointField,
    y: Tensor,
    x_channels: int,
    n_steps: int = 25,
    method: ODEMethod = "euler",
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Semantic synthesis: integrate d[x, y]/dt = v([x, y], t) from [eps_x, y] at t = 0 to t = 1.

        [x_0, y_0] = [eps_x, y],  eps_x ~ N(0, I);   return x_1 (the image channels)

    on a uniform grid of ``n_steps`` steps (the paper evaluates with 25 Euler steps).

    Args:
        field: the joint velocity ``field(state, t) -> (B, Cx + Cy, ...)``, t of shape (B,),
            e.g. a network trained with ``SymmFlowLoss``.
        y: (B, Cy, ...) semantic maps in [-1, 1] (``masks_to_channels``).
        x_channels: Cx, the number of image channels to generate; the noise has shape
            (B, Cx, ...) with y's trailing dimensions.
        n_steps: solver steps (>= 1).
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        generator: for eps_x.
        return_trajectory: also return the joint states at every grid time.

    Returns:
        (B, Cx, ...) images in y's dtype widened to float32 or wider; with
        ``return_trajectory`` the tuple (x, trajectory), trajectory (n_steps + 1, B, Cx + Cy, ...)
        with trajectory[0] = [eps_x, y].

    References:
        Symmetrical Flow Matching: Unified Image Generation, Segmentation, and Classification
        with Score-Based Generative Models (Caetano et al., 2025), arXiv:2506.10634, Sec. 3.

    Example:
        >>> field = lambda state, t: torch.ones_like(state)  # x_1 = eps_x + 1
        >>> g = torch.Generator().manual_seed(0)
        >>> x = symmflow_generate(field, -torch.ones(4, 8), x_channels=2, generator=g)
        >>> x.shape, torch.allclose(x, torch.randn(4, 2, generator=g.manual_seed(0)) + 1)
        (torch.Size([4, 2]), True)
    """
    _check_input("y", y)
    _check_channels("x_channels", x_channels)
    y = y.to(wider_float(y.dtype))  # state in float32 or wider
    eps_x = randn_like_gen(y.new_empty((y.shape[0], x_channels, *y.shape[2:])), generator)
    state = torch.cat([eps_x, y], dim=1)  # (B, Cx + Cy, ...) at t = 0
    grid = uniform_grid(n_steps, 0.0, 1.0, device=y.device, dtype=y.dtype)  # forward
    out = sample_ode(_joint(field), state, grid, method, return_trajectory=return_trajectory)
    if return_trajectory:
        state, trajectory = out
        return state[:, :x_channels], trajectory
    return out[:, :x_channels]


def symmflow_segment(
    field: JointField,
    x: Tensor,
    y_channels: int,
    n_steps: int = 1,
    method: ODEMethod = "euler",
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Segmentation: integrate d[x, y]/dt = v([x, y], t) backward from [x, eps_y] at t = 1 to 0.

        [x_1, y_1] = [x, eps_y],  eps_y ~ N(0, I);   return y_0 (the semantic channels)

    on the decreasing uniform grid 1 -> 0; one Euler step is [x, eps_y] - v([x, eps_y], 1),
    the paper's one-step segmentation. Decode the result with ``channels_to_masks`` (argmax
    over dim 1) or threshold it.

    Args:
        field: the joint velocity ``field(state, t) -> (B, Cx + Cy, ...)``, t of shape (B,).
        x: (B, Cx, ...) images.
        y_channels: Cy, the number of semantic channels; the noise has shape (B, Cy, ...) with
            x's trailing dimensions.
        n_steps: solver steps (>= 1; MedSymmFlow uses 10 Euler steps, 1 is usable).
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        generator: for eps_y.
        return_trajectory: also return the joint states at every grid time.

    Returns:
        (B, Cy, ...) semantic channels in x's dtype widened to float32 or wider; with
        ``return_trajectory`` the tuple (y, trajectory), trajectory (n_steps + 1, B, Cx + Cy, ...)
        with trajectory[0] = [x, eps_y] (t = 1) and trajectory[-1] at t = 0.

    References:
        Symmetrical Flow Matching (Caetano et al., 2025), arXiv:2506.10634, Sec. 3.

    Example:
        >>> field = lambda state, t: torch.ones_like(state)  # y_0 = eps_y - 1
        >>> g = torch.Generator().manual_seed(0)
        >>> y = symmflow_segment(field, torch.zeros(4, 2), y_channels=8, generator=g)
        >>> y.shape, torch.allclose(y, torch.randn(4, 8, generator=g.manual_seed(0)) - 1)
        (torch.Size([4, 8]), True)
    """
    _check_input("x", x)
    _check_channels("y_channels", y_channels)
    x = x.to(wider_float(x.dtype))
    Cx = x.shape[1]
    eps_y = randn_like_gen(x.new_empty((x.shape[0], y_channels, *x.shape[2:])), generator)
    state = torch.cat([x, eps_y], dim=1)  # (B, Cx + Cy, ...) at t = 1
    grid = uniform_grid(n_steps, 1.0, 0.0, device=x.device, dtype=x.dtype)  # backward
    out = sample_ode(_joint(field), state, grid, method, return_trajectory=return_trajectory)
    if return_trajectory:
        state, trajectory = out
        return state[:, Cx:], trajectory
    return out[:, Cx:]


def symmflow_classify(
    field: JointField,
    x: Tensor,
    num_classes: int,
    n_steps: int = 1,
    method: ODEMethod = "euler",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Classification: segment, average the recovered map over space, take the argmax.

        y_0 = symmflow_segment(field, x, K),   label = argmax_k mean_space y_0[:, k]

    for a field trained on image-level labels broadcast to a map (``masks_to_channels`` of the
    labels, expanded to x's spatial shape). The paper evaluates with one Euler step.

    Args:
        field: the joint velocity ``field(state, t) -> (B, Cx + K, ...)``.
        x: (B, Cx, ...) images.
        num_classes: K, the number of semantic channels.
        n_steps, method, generator: as in :func:`symmflow_segment`.

    Returns:
        (B,) long labels.

    References:
        Symmetrical Flow Matching (Caetano et al., 2025), arXiv:2506.10634, Sec. 3.

    Example:
        >>> field = lambda state, t: torch.zeros_like(state).index_fill(1, torch.tensor([2]), -9)
        >>> symmflow_classify(field, torch.zeros(2, 1, 4, 4), num_classes=3).tolist()
        [1, 1]
    """
    y_0 = symmflow_segment(field, x, num_classes, n_steps, method, generator)  # (B, K, ...)
    scores = y_0.flatten(2).mean(2) if y_0.dim() > 2 else y_0  # (B, K)
    return scores.argmax(dim=1)

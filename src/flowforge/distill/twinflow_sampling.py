"""TwinFlow's network calls and sampler (card 08): the two-time input, the end points of one
prediction, the twin velocity difference Delta_v, the time grid and the few-step sampler.

``flowforge.distill.twinflow`` trains the network (``TwinFlowLoss``); its docstring gives the
card -> flowforge conventions used here (t = 0 noise, t = 1 data, twin times (-t, -t)).

References:
    TwinFlow: Realizing One-step Generation on Large Models with Self-adversarial Flows (Cheng,
    Sun, Li & Lin, 2025), arXiv:2512.05150; Unified Continuous Generative Models (UCGM, Sun et
    al., 2025), arXiv:2505.07447 (sampler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowforge.utils import check_choice, expand_like, randn_like_gen, wider_float

__all__ = [
    "SampleStyle",
    "TwinNet",
    "repeat_cond",
    "twin_delta",
    "twin_endpoints",
    "twin_times",
    "twinflow_sample",
    "twinflow_time_grid",
]

SampleStyle = Literal["few", "any", "mul"]
TwinNet = Callable[..., Tensor]  # model(x (B, ...), times (B, 2), cond) -> (B, ...)


def twin_times(t: Tensor, s: Tensor) -> Tensor:
    """(B,), (B,) -> (B, 2): the two-time input of an ``n_times=2`` network."""
    return torch.stack([t, s], dim=-1)


def repeat_cond(cond: Tensor | None, k: int) -> Tensor | None:
    """cond for a batch made of k concatenated copies (None stays None)."""
    return None if cond is None else torch.cat([cond] * k)


def twin_endpoints(x_t: Tensor, t: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """Data and noise endpoints implied by a velocity prediction at signed time t.

    x_hat_1 = x_t + (1 - |t|) G,  x_hat_0 = x_t - |t| G   (card: x = x_tau - |tau| F,
    z = x_tau + (1 - |tau|) F). The absolute value makes the twin branch (t < 0) invert through
    the same interpolant x_t = |t| x_1 + (1 - |t|) x_0.

    Args:
        x_t: (B, ...) state.
        t: (B,) signed times in [-1, 1].
        pred: (B, ...) the network's velocity prediction G.

    Returns:
        (x_hat_1, x_hat_0), each (B, ...).

    Example:
        >>> x_1, x_0, t = torch.ones(2, 2), torch.zeros(2, 2), torch.tensor([0.25, -0.25])
        >>> x_t = 0.25 * x_1 + 0.75 * x_0
        >>> twin_endpoints(x_t, t, x_1 - x_0)[0].tolist()  # exact velocity -> exact x_1
        [[1.0, 1.0], [1.0, 1.0]]
    """
    a = expand_like(t.abs(), x_t)  # (B, 1, ..., 1)
    return x_t + (1 - a) * pred, x_t - a * pred


@torch.no_grad()
def twin_delta(model: TwinNet, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """Real-minus-fake velocity Delta_v = G(x_t, (t, t)) - G(x_t, (-t, -t)), without gradient.

    For exact fields Delta_v = (E_real[x_1 | x_t] - E_fake[x_1 | x_t]) / (1 - t): it points from
    the fake posterior mean to the real one. Computed under ``torch.no_grad`` on both branches,
    so the network cannot lower a loss built on it by shrinking it (card pitfall 3).

    Args:
        model: a two-time network ``model(x, (B, 2) times, cond)``.
        x_t: (B, ...) points.
        t: (B,) times in [0, 1].
        cond: (B,) labels or None.

    Returns:
        (B, ...) Delta_v, detached.

    Example:
        >>> real = lambda x, tt, c=None: torch.where(tt[:, :1] >= 0, 1.0, 0.0).expand_as(x)
        >>> twin_delta(real, torch.zeros(3, 2), torch.full((3,), 0.5)).tolist()[0]
        [1.0, 1.0]
    """
    B = x_t.shape[0]
    times = torch.cat([twin_times(t, t), twin_times(-t, -t)])  # both branches in one call
    real, fake = model(torch.cat([x_t, x_t]), times, repeat_cond(cond, 2)).split(B)
    return real - fake


def twinflow_time_grid(
    n_steps: int,
    warp: tuple[float, float, float] = (1.0, 1.0, 1.0),
    gaps: tuple[float, float] = (0.0, 0.0),
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """UCGM sampling grid in our time: t_i = K(u_i), i < n, t_n = 1 (data).

    K(u) = (1 - (1 - u^a)^b)^c is the Kumaraswamy warp; u_i = linspace(g_0, 1 - g_1, n), or the
    first n of linspace(g_0, 1, n + 1) when g_1 = 0 (card: t_card = 1 - K(u), final 0).

    Args:
        n_steps: n >= 1.
        warp: (a, b, c) (card multi-step SD3.5: (1.17, 0.8, 1.1)).
        gaps: (g_0, g_1), ``rfba_gap_steps`` (card few-step: (0.001, 0.7)).
        dtype: of the grid.

    Returns:
        (n + 1,) increasing times from about 0 to 1.

    Example:
        >>> twinflow_time_grid(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} must be >= 1.")
    g0, g1 = gaps
    if not (0 <= g0 < 1 and 0 <= g1 < 1 and g0 < 1 - g1):
        raise ValueError(f"gaps={gaps!r} must satisfy 0 <= g_0 < 1 - g_1 <= 1.")
    if g1 == 0:
        u = torch.linspace(g0, 1.0, n_steps + 1, dtype=dtype)[:-1]
    else:
        u = torch.linspace(g0, 1.0 - g1, n_steps, dtype=dtype)
    a, b, c = warp
    t = (1 - (1 - u**a) ** b) ** c
    return torch.cat([t, torch.ones(1, dtype=dtype)])


def twinflow_sample(
    model: TwinNet,
    x_0: Tensor,
    n_steps: int = 1,
    cond: Tensor | None = None,
    style: SampleStyle = "few",
    stochasticity: float = 0.0,
    warp: tuple[float, float, float] = (1.0, 1.0, 1.0),
    gaps: tuple[float, float] = (0.0, 0.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """UCGM sampler of a TwinFlow network: noise at t = 0 to data at t = 1, 1 NFE per step.

    On the grid t_0 < ... < t_n = 1 (``twinflow_time_grid``), each step predicts
    G = model(x, (t_i, s)) with s = 1 (``"few"``), s = t_{i+1} (``"any"``) or s = t_i (``"mul"``,
    the instantaneous velocity: plain Euler), forms x_hat_1, x_hat_0 (``twin_endpoints``) and
    sets x <- t_{i+1} x_hat_1 + (1 - t_{i+1}) (sqrt(1 - rho) x_hat_0 + sqrt(rho) eps). With
    n = 1 this is the one-step generator x_0 + G(x_0, (0, 1)). Differentiable; the state is
    kept in float32 or wider.

    Args:
        model: a two-time network ``model(x, (B, 2) times, cond)``.
        x_0: (B, ...) noise.
        n_steps: n, the number of steps (= NFE).
        cond: (B,) labels or None.
        style: target time of each jump, ``"few"``, ``"any"`` or ``"mul"``.
        stochasticity: rho in [0, 1] (card ``stochast_ratio``; 0 is deterministic).
        warp, gaps: the grid's Kumaraswamy warp and end gaps.
        generator: for the injected noise when rho > 0.

    Returns:
        (B, ...) samples at t = 1.

    References:
        Unified Continuous Generative Models (Sun et al., 2025), arXiv:2505.07447.

    Example:
        >>> exact = lambda x, tt, c=None: 3.0 - x  # data is the point 3: u = 3 - x_0
        >>> twinflow_sample(exact, torch.zeros(2, 1)).tolist()
        [[3.0], [3.0]]
    """
    check_choice("style", style, ("few", "any", "mul"))
    if not 0 <= stochasticity <= 1:
        raise ValueError(f"stochasticity={stochasticity!r} must lie in [0, 1].")
    x = x_0.to(wider_float(x_0.dtype))
    grid = twinflow_time_grid(n_steps, warp, gaps, dtype=x.dtype).to(x.device)
    B = x.shape[0]
    for i in range(n_steps):
        t_c, t_n = grid[i].expand(B), grid[i + 1]
        if style == "few":
            s = torch.ones_like(t_c)
        elif style == "any":
            s = t_n.expand(B)
        else:
            s = t_c
        x_hat_1, x_hat_0 = twin_endpoints(x, t_c, model(x, twin_times(t_c, s), cond))
        if stochasticity > 0:
            eps = randn_like_gen(x, generator)
            x_hat_0 = (1 - stochasticity) ** 0.5 * x_hat_0 + stochasticity**0.5 * eps
        x = t_n * x_hat_1 + (1 - t_n) * x_hat_0
    return x

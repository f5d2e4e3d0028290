"""FreeFlow's objectives as functions (card 07): the student map, the prediction target, the
fake-velocity and correction losses, and the trajectory residual used to check them.

``flowforge.distill.freeflow`` assembles them into ``FreeFlowLoss``; its docstring gives the
card -> flowforge time conventions these functions follow (t = 0 noise, t = 1 data; the map
X(x, s, t) = x + (t - s) F(x, s, t) with F from a two-time network).

References:
    Flow Map Distillation Without Data (Tong, Ma, Xie & Jaakkola, 2025), arXiv:2511.19428.
    Mean Flows for One-step Generative Modeling (Geng et al., 2025), arXiv:2505.13447 (JVP target).
    One-step Diffusion with Distribution Matching Distillation (Yin et al., 2024),
    arXiv:2311.18828; ProlificDreamer (Wang et al., 2023), arXiv:2305.16213 (VSD correction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowforge.losses.distances import mse
from flowforge.protocols import Field
from flowforge.utils import check_choice, expand_like, unwrap_ddp

__all__ = [
    "CorrWeighting",
    "MapNet",
    "Metric",
    "correction_loss",
    "fake_velocity_loss",
    "freeflow_map",
    "prediction_target",
    "trajectory_residual",
]

CorrWeighting = Literal["uniform", "dmd"]
MapNet = Callable[..., Tensor]  # model(x (B, ...), times (B, 2), cond) -> F (B, ...)
Metric = Callable[[Tensor, Tensor], Tensor]  # (pred, target) -> (B,)


def _times(s: Tensor, t: Tensor) -> Tensor:
    """(B,), (B,) -> (B, 2): the two-time input (start s, end t) of an ``n_times=2`` network."""
    return torch.stack([s, t], dim=-1)


def freeflow_map(
    model: MapNet, x_s: Tensor, s: Tensor, t: Tensor, cond: Tensor | None = None
) -> Tensor:
    """The student flow map X(x_s, s, t) = x_s + (t - s) F(x_s, s, t).

    X(x, s, s) = x exactly for any network, so the map from the prior (s = 0) is the identity
    at the prior time t = 0 by construction (card pitfall: boundary by parameterisation).

    Args:
        model: two-time network ``model(x, (B, 2) times, cond) -> F`` (B, ...).
        x_s: (B, ...) states at the start times.
        s, t: (B,) start and end times (t = 0 noise, t = 1 data).
        cond: labels passed to the model, or None.

    Returns:
        (B, ...) X(x_s, s, t).

    Example:
        >>> F = lambda x, tt, c=None: torch.ones_like(x)
        >>> z = torch.randn(3, 2)
        >>> bool((freeflow_map(F, z, torch.zeros(3), torch.zeros(3)) == z).all())
        True
    """
    return x_s + expand_like(t - s, x_s) * model(x_s, _times(s, t), cond)


def prediction_target(
    model: MapNet,
    teacher: Field,
    x_s: Tensor,
    s: Tensor,
    t: Tensor,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Student output F and its data-free Lagrangian self-target F_tgt (card, prediction).

    The student trajectory must satisfy the teacher ODE, d/dt X(x_s, s, t) = u(X, t). With
    X = x_s + (t - s) F this reads F + (t - s) dF/dt = u(X, t), hence the MeanFlow-like target

        F, dF/dt = jvp(F(x_s, s, .), t, 1)             (tangent 0 for x and s, 1 for t)
        x_t      = sg(x_s + (t - s) F)                  (the student's own state)
        F_tgt    = sg(u(x_t, t) - (t - s) dF/dt)        (teacher queried at the student's state)

    The exact flow map of u has F = F_tgt (closed-form test). Forward-mode AD (``torch.func.jvp``)
    gives dF/dt exactly; F keeps its graph to the parameters, F_tgt has none.

    Args:
        model: two-time network returning F.
        teacher: frozen velocity field ``teacher(x, t, cond)``; called under ``torch.no_grad``.
        x_s: (B, ...) start states; s, t: (B,) start and end times.
        cond: labels passed to the model and the teacher, or None.

    Returns:
        (F, F_tgt, dF_dt), each (B, ...); only F requires grad.

    Example:
        >>> u = lambda x, t, c=None: torch.ones_like(x)  # constant field: X = x + (t - s)
        >>> F_net = lambda x, tt, c=None: torch.ones_like(x)  # its exact map
        >>> F, F_tgt, dF = prediction_target(F_net, u, torch.zeros(2, 2), torch.zeros(2),
        ...                                  torch.full((2,), 0.5))
        >>> (F - F_tgt).abs().max().item(), dF.abs().max().item()
        (0.0, 0.0)
    """

    inner = unwrap_ddp(model)

    def F_of_t(t_: Tensor) -> Tensor:
        return inner(x_s, _times(s, t_), cond)

    tangent = (torch.ones_like(t),)
    if inner is model:
        F, dF_dt = torch.func.jvp(F_of_t, (t,), tangent)  # card: jvp(F, (z, t), (0, 1))
    else:  # DDP: the JVP runs on the inner network, F (with its gradient) on the wrapper
        with torch.no_grad():
            _, dF_dt = torch.func.jvp(F_of_t, (t,), tangent)
        F = model(x_s, _times(s, t), cond)
    dF_dt = dF_dt.detach()
    with torch.no_grad():
        dt = expand_like(t - s, x_s)  # (B, 1, ..., 1)
        x_t = x_s + dt * F.detach()
        F_tgt = teacher(x_t, t, cond) - dt * dF_dt
    return F, F_tgt, dF_dt


def fake_velocity_loss(
    fake: Field, x_hat: Tensor, tau: Tensor, noise: Tensor, cond: Tensor | None = None
) -> Tensor:
    """Flow matching of the fake velocity net g_psi on the student's samples (card, L_psi).

    L_psi = ||g(x_tau, tau) - (x_hat - eps)||^2 (mean over features), x_tau = tau x_hat +
    (1 - tau) eps, with x_hat detached (card: ||g - (eps - x_hat)||^2 in its time direction).

    Args:
        fake: the fake velocity network ``fake(x, t, cond)``.
        x_hat: (B, ...) student samples (detached here); tau: (B,) times; noise: (B, ...) eps.
        cond: labels or None.

    Returns:
        (B,) per-example losses (gradients reach ``fake`` only).

    Example:
        >>> exact = lambda x, t, c=None: torch.zeros_like(x)  # x_hat = eps: target 0
        >>> e = torch.randn(4, 2)
        >>> fake_velocity_loss(exact, e, torch.rand(4), e).abs().max().item()
        0.0
    """
    x_hat = x_hat.detach()
    a = expand_like(tau, x_hat)
    x_tau = a * x_hat + (1 - a) * noise
    return mse(fake(x_tau, tau, cond), x_hat - noise)


def correction_loss(
    x_hat: Tensor,
    teacher: Field,
    fake: Field,
    tau: Tensor,
    noise: Tensor,
    cond: Tensor | None = None,
    weighting: CorrWeighting = "uniform",
) -> Tensor:
    """Distribution-matching correction of the student's samples (card, L_corr; VSD / DMD).

        x_tau  = tau x_hat + (1 - tau) eps
        L_corr = w(tau) <sg(g(x_tau, tau) - u(x_tau, tau)), x_tau> / D

    Sign: for exact fields u - g = (E_teacher[x_1 | x_tau] - E_fake[x_1 | x_tau]) / (1 - tau),
    so a descent step moves x_hat along tau (u - g), toward the teacher's posterior mean; this is
    the KL gradient (score_fake - score_teacher) . dx/dtheta up to a positive factor absorbed in w.
    ``weighting``: ``"uniform"`` w = 1; ``"dmd"`` w = 1 / mean_features |x_tau + (1 - tau) u -
    x_hat| (DMD's normaliser: the teacher's distance between its x_1 prediction and the sample),
    detached. Dividing by D keeps the scale of a per-feature mean like ``mse``.

    Args:
        x_hat: (B, ...) student samples, with graph to the parameters.
        teacher: frozen velocity u; fake: fake velocity g_psi (both under ``torch.no_grad``).
        tau: (B,) noising times in (0, 1); noise: (B, ...) eps.
        cond: labels for both fields, or None.
        weighting: ``"uniform"`` or ``"dmd"``.

    Returns:
        (B,) per-example surrogate losses; their value is meaningless, their gradient is not.

    Example:
        >>> u = lambda x, t, c=None: torch.zeros_like(x)
        >>> g = lambda x, t, c=None: torch.ones_like(x)  # fake says "more +1": push x_hat down
        >>> x_hat = torch.zeros(1, 2, requires_grad=True)
        >>> correction_loss(x_hat, u, g, torch.full((1,), 0.5), torch.zeros(1, 2)).sum().backward()
        >>> x_hat.grad.tolist()  # tau (g - u) / D
        [[0.25, 0.25]]
    """
    check_choice("weighting", weighting, ("uniform", "dmd"))
    a = expand_like(tau, x_hat)
    x_tau = a * x_hat + (1 - a) * noise  # (B, ...)
    with torch.no_grad():
        x_in = x_tau.detach()
        u = teacher(x_in, tau, cond)
        diff = fake(x_in, tau, cond) - u  # g - u  (card: u_card - g_card)
        if weighting == "dmd":
            x1_teacher = x_in + (1 - a) * u
            w = 1.0 / (x1_teacher - x_hat.detach()).abs().flatten(1).mean(1).clamp_min(1e-6)
        else:
            w = torch.ones_like(tau)
    return w * (diff * x_tau).flatten(1).mean(1)


def trajectory_residual(
    model: MapNet,
    teacher: Field,
    z: Tensor,
    n_times: int = 50,
    cond: Tensor | None = None,
) -> Tensor:
    """Mean squared ODE residual E||d/dt X(z, 0, t) - u(X, t)||^2 of the prior map (card check 1).

    d/dt X by central finite differences with h = 1 / (2 n_times) at the midpoints
    t_k = (k + 1/2) / n_times, k = 0..n_times-1; mean over times, examples and features.

    Args:
        model: two-time network returning F; teacher: velocity field.
        z: (B, ...) prior samples; n_times: number of times; cond: labels or None.

    Returns:
        () the residual.

    Example:
        >>> u = lambda x, t, c=None: torch.ones_like(x)
        >>> F = lambda x, tt, c=None: torch.ones_like(x)  # the exact map X = z + t
        >>> round(trajectory_residual(F, u, torch.randn(4, 2), 10).item(), 9)
        0.0
    """
    if n_times < 1:
        raise ValueError(f"n_times={n_times!r} must be >= 1 (the card uses 50).")
    B, h = z.shape[0], 0.5 / n_times
    total = z.new_zeros(())
    with torch.no_grad():
        zero = z.new_zeros(B)
        for k in range(n_times):
            t = z.new_full((B,), (k + 0.5) / n_times)
            x_t = freeflow_map(model, z, zero, t, cond)
            dX = freeflow_map(model, z, zero, t + h, cond) - freeflow_map(
                model, z, zero, t - h, cond
            )
            total = total + (dX / (2 * h) - teacher(x_t, t, cond)).square().mean()
    return total / n_times

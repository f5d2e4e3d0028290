"""Sequential Monte Carlo from a flow proposal to a Boltzmann target, with Langevin moves.

Anneal E_t = (1 - t) E_source + t E_target on a uniform grid of S steps, E_source = -log q.
Particles start as proposal samples with log w = 0; each step k (dt = 1 / S):

    log w <- log w - (E_target(x) - E_source(x)) dt     # the pre-move particles
    if ESS / n < threshold or k = S: log Z += LSE(log w) - log n; resample; log w = 0
    x <- MALA (or ULA) moves leaving exp(-E_t) invariant, step size h

The returned particles are equally weighted after the last resampling; ``log_z`` is the product
of the mean incremental weights (unbiased for Z), so a normalised proposal gives the target's
log Z. MALA's step size adapts each step towards ``target_acceptance``.

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
    Del Moral, Doucet & Jasra, Sequential Monte Carlo Samplers (2006).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from flowforge.nf.boltzmann.energies import Energy
from flowforge.nf.boltzmann.snis import proposal_samples
from flowforge.nf.boltzmann.weights import (
    Weights,
    kish_ess,
    multinomial_resample,
    systematic_resample,
)

__all__ = ["SMCResult", "mala_step", "smc"]


@dataclass
class SMCResult:
    """What an SMC run returns.

    Attributes:
        x: (n, D) final particles (equally weighted after the last resampling).
        weights: their log-weights (zeros; ``-inf`` for particles whose energy is not finite).
        log_z: the estimate of log Z (with a normalised proposal).
        ess_history: ESS / n after each step's weight update (before resampling).
        resampled_at: the steps that resampled.
        acceptance: mean MALA acceptance per step.
        step_sizes: the step size used per step.
        evaluations: target energy (and gradient) evaluations spent.
        non_finite: proposals or particles whose energy was not finite (weight 0, rejected).
    """

    x: Tensor
    weights: Weights
    log_z: float
    ess_history: list[float] = field(default_factory=list)
    resampled_at: list[int] = field(default_factory=list)
    acceptance: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)
    evaluations: int = 0
    non_finite: int = 0


def _energies(proposal, target: Energy, x: Tensor, cond) -> tuple[Tensor, ...]:
    """E_source, E_target (B,) and their gradients (B, D) at x; rows whose energies are not
    finite get zero gradients (and are rejected or weighted zero by the caller)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e_src = -proposal.log_prob(x, cond).double()
        e_tgt = target.energy(x).double()
        finite = torch.isfinite(e_src) & torch.isfinite(e_tgt)
        g_src, g_tgt = (
            torch.autograd.grad(torch.where(finite, e, 0.0).sum(), x)[0]
            if e.requires_grad
            else torch.zeros_like(x)  # an energy that does not depend on x (a broken one)
            for e in (e_src, e_tgt)
        )
    rows = finite[:, None]
    g_src = torch.where(rows, g_src.nan_to_num(0.0, 0.0, 0.0), 0.0)
    g_tgt = torch.where(rows, g_tgt.nan_to_num(0.0, 0.0, 0.0), 0.0)
    return e_src.detach(), e_tgt.detach(), g_src.detach(), g_tgt.detach()


def mala_step(
    x: Tensor,
    e_t: Tensor,
    grad: Tensor,
    energies,
    h: float,
    adjust: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, object]:
    """One Langevin move y = x - h grad E(x) + sqrt(2 h) xi, accepted by Metropolis-Hastings
    (MALA) or always when finite (ULA).

    Args:
        x: (B, D) current states; e_t: (B,) their energies; grad: (B, D) their gradients.
        energies: ``y -> (E(y) (B,), grad E(y) (B, D), extra)`` at proposed states (``extra``
            is handed back: the caller's cached per-state values).
        h: step size.
        adjust: MALA's accept/reject (False: the unadjusted Langevin algorithm).
        generator: random source.

    Returns:
        ``(accepted (B,) bool, y (B, D), E(y), grad E(y), extra)`` of the proposals; the caller
        keeps the accepted rows.
    """
    xi = torch.randn(x.shape, generator=generator).to(x)
    y = x - h * grad + math.sqrt(2 * h) * xi
    e_y, grad_y, extra = energies(y)
    finite = torch.isfinite(e_y)
    if not adjust:
        return finite, y, e_y, grad_y, extra
    log_fwd = -(y - x + h * grad).double().square().sum(1) / (4 * h)  # log q(y | x)
    log_bwd = -(x - y + h * grad_y).double().square().sum(1) / (4 * h)  # log q(x | y)
    log_alpha = -(e_y - e_t) + log_bwd - log_fwd
    u = torch.rand(len(x), generator=generator, dtype=torch.float64)
    return finite & (torch.log(u) < log_alpha), y, e_y, grad_y, extra


def smc(
    proposal,
    target: Energy,
    n: int,
    steps: int = 100,
    step_size: float = 0.01,
    mcmc: Literal["mala", "ula"] = "mala",
    substeps: int = 1,
    ess_threshold: float = 0.5,
    resampling: Literal["systematic", "multinomial"] = "systematic",
    target_acceptance: float | None = 0.6,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    x: Tensor | None = None,
) -> SMCResult:
    """Anneal ``n`` proposal particles to ``target`` in ``steps`` steps (see the module).

    Args:
        proposal: a flow (``sample``, ``log_prob`` differentiable in x).
        target: the energy.
        n: particles.
        steps: S annealing steps.
        step_size: the Langevin step size h (the card's eps * dt).
        mcmc: ``"mala"`` (Metropolis-adjusted) or ``"ula"`` (unadjusted).
        substeps: Langevin moves per step.
        ess_threshold: resample when ESS / n falls below it (1.0: every step).
        resampling: ``"systematic"`` or ``"multinomial"``.
        target_acceptance: MALA adapts h towards this acceptance rate (None: fixed h).
        cond: (1, ...) the proposal's condition, or None.
        generator: random source.
        x: (n, D) proposal samples to start from (None: ``n`` drawn here).

    Returns:
        ``SMCResult``.

    Raises:
        NoWeightError: every particle's weight is zero (with the ESS history).

    Example:
        >>> from flowforge.nf.boltzmann.energies import GaussianMixture
        >>> from flowforge.nf.boltzmann.snis import DiagonalGaussian
        >>> gmm = GaussianMixture(modes=2, scale=1.0)
        >>> q = DiagonalGaussian(torch.zeros(2), torch.full((2,), 3.0))
        >>> out = smc(q, gmm, 2000, steps=20, generator=torch.Generator().manual_seed(0))
        >>> abs(out.log_z) < 0.1, out.resampled_at[-1]  # log Z = 0; the last step resamples
        (True, 20)
    """
    if steps < 1 or substeps < 1 or n < 1:
        raise ValueError(f"steps={steps}, substeps={substeps} and n={n} must be >= 1.")
    if not step_size > 0:
        raise ValueError(f"step_size={step_size!r} must be > 0.")
    if not 0 < ess_threshold <= 1:
        raise ValueError(f"ess_threshold={ess_threshold!r} must be in (0, 1].")
    resample = systematic_resample if resampling == "systematic" else multinomial_resample
    cond_n = None if cond is None else cond.expand(n, *cond.shape[1:])
    if x is None:
        x, _ = proposal_samples(proposal, n, cond, generator)
    elif len(x) != n:
        raise ValueError(f"x holds {len(x)} particles; n={n} were asked for.")
    state = _energies(proposal, target, x, cond_n)  # (E_src, E_tgt, grad E_src, grad E_tgt)
    finite = torch.isfinite(state[0]) & torch.isfinite(state[1])
    log_w = torch.where(finite, 0.0, -math.inf).double()
    out = SMCResult(x, Weights(log_w), 0.0, evaluations=n, non_finite=int((~finite).sum()))
    h, log_z = step_size, 0.0
    for k in range(1, steps + 1):
        t = k / steps
        inc = -(state[1] - state[0]) / steps  # the pre-move particles
        log_w = log_w + torch.where(torch.isfinite(inc), inc, -math.inf)
        ess = kish_ess(log_w).item() / n
        out.ess_history.append(ess)
        if ess == 0:
            Weights(log_w, non_finite=out.non_finite, history=out.ess_history).check()
        if ess < ess_threshold or k == steps:
            log_z += (torch.logsumexp(log_w, 0) - math.log(n)).item()
            idx = resample(log_w, n, generator)
            x, state = x[idx], tuple(v[idx] for v in state)
            log_w = torch.zeros(n, dtype=torch.float64)
            out.resampled_at.append(k)

        def annealed(y, t=t):
            e_src, e_tgt, g_src, g_tgt = new = _energies(proposal, target, y, cond_n)
            return (1 - t) * e_src + t * e_tgt, ((1 - t) * g_src + t * g_tgt).to(y), new

        accepted = 0.0
        for _ in range(substeps):
            e_src, e_tgt, g_src, g_tgt = state
            e_t, grad = (1 - t) * e_src + t * e_tgt, ((1 - t) * g_src + t * g_tgt).to(x)
            ok, y, e_y, _, new = mala_step(x, e_t, grad, annealed, h, mcmc == "mala", generator)
            out.evaluations += n
            out.non_finite += int((~torch.isfinite(e_y)).sum())
            x = torch.where(ok[:, None], y, x)
            state = tuple(
                torch.where(ok[:, None] if v.dim() == 2 else ok, v_new, v)
                for v, v_new in zip(state, new, strict=True)
            )
            accepted += ok.double().mean().item()
        out.acceptance.append(accepted / substeps)
        out.step_sizes.append(h)
        if mcmc == "mala" and target_acceptance is not None:
            h *= math.exp(out.acceptance[-1] - target_acceptance)
    out.x, out.log_z = x, log_z
    out.weights = Weights(log_w, non_finite=out.non_finite, history=out.ess_history)
    return out

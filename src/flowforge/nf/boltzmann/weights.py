"""Self-normalised importance sampling: log-weights, Kish ESS, log Z with an error bar, resampling.

For samples x_i ~ q of a proposal with exact density and a target p(x) = exp(-E(x)) / Z:

    log w_i = -E(x_i) - log q(x_i)                      (E_source = -log q: never +log q)
    w̄_i = softmax(log w)_i,   E_p[f] ~= sum_i w̄_i f(x_i)
    ESS = (sum w)^2 / sum w^2 = exp(2 LSE(log w) - LSE(2 log w))
    log Z ~= LSE(log w) - log n,   se(log Z) ~= sqrt((n / ESS - 1) / n)   (delta method)

Samples whose energy or proposal density is not finite get weight zero and are counted; extreme
weights are filtered *before* normalising (an energy cutoff and a top quantile of log w), since
one catastrophic weight would hold all the mass. The filters bias Z low (they drop the largest
weights), so log Z reads every finite weight.

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
    Kish, Survey Sampling (1965), the effective sample size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "NoWeightError",
    "Weights",
    "importance_weights",
    "kish_ess",
    "log_z_estimate",
    "multinomial_resample",
    "systematic_resample",
]


class NoWeightError(RuntimeError):
    """Every importance weight is zero: the proposal never reached the target."""


def kish_ess(log_w: Tensor) -> Tensor:
    """Kish's effective sample size from log-weights (any scale), computed in log space.

    Zero weights (``-inf``) count as samples with no weight; all of them zero gives 0.

    Example:
        >>> round(kish_ess(torch.zeros(10)).item(), 6)  # equal weights: every sample counts
        10.0
        >>> round(kish_ess(torch.tensor([0.0, -float("inf"), 0.0])).item(), 6)
        2.0
    """
    log_w = log_w.double()
    if torch.isneginf(log_w).all():
        return torch.zeros((), dtype=torch.float64)
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def log_z_estimate(log_w: Tensor) -> tuple[float, float]:
    """``(log Z, its standard error)`` of unnormalised log-weights ``log_w`` (n,).

    log Z = LSE(log w) - log n; the error bar is the delta method's sd(w) / (sqrt(n) mean(w)),
    which in terms of the ESS is sqrt((n / ESS - 1) / n).

    Example:
        >>> log_z, se = log_z_estimate(torch.full((100,), 2.0))
        >>> round(log_z, 6), round(se, 6)
        (2.0, 0.0)
    """
    n = log_w.numel()
    ess = kish_ess(log_w).item()
    if ess == 0:
        return -math.inf, math.inf
    log_z = (torch.logsumexp(log_w.double(), 0) - math.log(n)).item()
    return log_z, math.sqrt(max(n / ess - 1.0, 0.0) / n)


@dataclass
class Weights:
    """Importance weights of a sample set, with what was dropped.

    Attributes:
        log_w: (n,) float64 unnormalised log-weights; ``-inf`` for dropped samples.
        non_finite: samples dropped because their energy or density was NaN/inf.
        above_cutoff: samples dropped because their energy exceeded the cutoff.
        filtered: samples dropped by the log-weight quantile filter.
        history: ESS values of earlier stages (SMC steps), for error messages.
        unfiltered: (n,) the log-weights before the cutoff and quantile filters (non-finite
            ones zero): ``log_z`` reads them, as dropping the largest weights biases Z low.
    """

    log_w: Tensor
    non_finite: int = 0
    above_cutoff: int = 0
    filtered: int = 0
    history: list[float] = field(default_factory=list)
    unfiltered: Tensor | None = None

    @property
    def n(self) -> int:
        """Samples drawn (dropped ones included)."""
        return self.log_w.numel()

    @property
    def ess(self) -> float:
        """Kish effective sample size."""
        return kish_ess(self.log_w).item()

    @property
    def normalized(self) -> Tensor:
        """(n,) self-normalised weights w̄ (sum 1)."""
        self.check()
        return torch.softmax(self.log_w, 0)

    def check(self) -> None:
        """Raise ``NoWeightError`` when every weight is zero (with what dropped them)."""
        if torch.isneginf(self.log_w).all():
            raise NoWeightError(
                f"all {self.n} importance weights are zero ({self.non_finite} non-finite "
                f"energies or densities, {self.above_cutoff} above the energy cutoff, "
                f"{self.filtered} filtered; ESS history {[round(e, 1) for e in self.history]}): "
                "the proposal puts no mass where the target does; train it longer, widen it, or "
                "raise the energy cutoff."
            )

    def log_z(self) -> tuple[float, float]:
        """``(log Z, standard error)`` when the proposal density is normalised, from every
        finite weight (the filters trade this unbiasedness for stable expectations)."""
        self.check()
        return log_z_estimate(self.log_w if self.unfiltered is None else self.unfiltered)

    def expectation(self, f_x: Tensor) -> Tensor:
        """E_p[f] ~= sum_i w̄_i f(x_i) for per-sample values ``f_x`` (n, ...)."""
        w = self.normalized.to(f_x.dtype)
        return torch.einsum("n,n...->...", w, f_x.nan_to_num(0.0))


def importance_weights(
    log_target: Tensor,
    log_q: Tensor,
    energy_cutoff: float | None = None,
    quantile: float = 0.0,
) -> Weights:
    """SNIS log-weights log w = log p̃(x) - log q(x) of samples x ~ q, filtered.

    Args:
        log_target: (n,) unnormalised target log-density -E(x) (NaN/inf allowed: weight 0).
        log_q: (n,) proposal log-density of the same samples.
        energy_cutoff: drop samples with E(x) = -log_target above it (None: keep all).
        quantile: drop the top ``quantile`` fraction of log w before normalising (0.002 in the
            card's SNIS; 0: none).

    Returns:
        ``Weights`` with the dropped samples counted.

    Example:
        >>> w = importance_weights(torch.tensor([0.0, float("nan"), -1.0]), torch.zeros(3))
        >>> w.non_finite, round(w.ess, 4)
        (1, 1.6481)
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile={quantile!r} must be in [0, 1) (0.002: drop the top 0.2%).")
    log_target, log_q = log_target.double(), log_q.double()
    log_w = log_target - log_q
    finite = torch.isfinite(log_w)
    kept = finite.clone()
    above = 0
    if energy_cutoff is not None:
        high = finite & (-log_target > energy_cutoff)
        above = int(high.sum())
        kept &= ~high
    filtered = 0
    if quantile > 0 and kept.sum() > 1:
        top = torch.quantile(log_w[kept], 1.0 - quantile)
        drop = kept & (log_w > top)
        filtered = int(drop.sum())
        kept &= ~drop
    unfiltered = torch.where(finite, log_w, torch.full_like(log_w, -math.inf))
    log_w = torch.where(kept, log_w, torch.full_like(log_w, -math.inf))
    return Weights(log_w, int((~finite).sum()), above, filtered, unfiltered=unfiltered)


def multinomial_resample(
    log_w: Tensor, n: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """(n,) indices drawn with probabilities softmax(log w) (with replacement).

    Example:
        >>> multinomial_resample(torch.tensor([-float("inf"), 0.0]), 3).tolist()
        [1, 1, 1]
    """
    n = log_w.numel() if n is None else n
    probs = torch.softmax(log_w.double(), 0)
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def systematic_resample(
    log_w: Tensor, n: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """(n,) indices by systematic resampling: one uniform u, points (u + k) / n on the CDF.

    Lower variance than multinomial: index i appears floor(n w̄_i) or ceil(n w̄_i) times.

    Example:
        >>> systematic_resample(torch.log(torch.tensor([0.5, 0.25, 0.25])), 4).tolist()
        [0, 0, 1, 2]
    """
    n = log_w.numel() if n is None else n
    cdf = torch.cumsum(torch.softmax(log_w.double(), 0), 0)
    cdf[-1] = 1.0  # rounding must not leave the last point past the end
    u = torch.rand((), generator=generator, dtype=torch.float64)
    points = (u + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, points, right=True).clamp_(max=log_w.numel() - 1)

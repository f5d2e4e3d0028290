"""Quadratic objectives for the velocity, drift, score and denoiser of a stochastic interpolant."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from flowforge.losses.time_samplers import UniformTime
from flowforge.paths.interpolant import InterpolantSample, StochasticInterpolant
from flowforge.protocols import Field, TimeSampler
from flowforge.utils.checks import check_batch, check_choice, check_same_shape
from flowforge.utils.tensor import expand_like, randn_like_gen

__all__ = ["InterpolantLoss", "InterpolantTarget"]

InterpolantTarget = Literal["velocity", "drift", "score", "denoiser"]
_TARGETS = ("velocity", "drift", "score", "denoiser")


def _regression_target(s: InterpolantSample, target: str) -> Tensor:
    """y with L = 1/2 |f|^2 - y . f, whose minimiser over f(x_t, t) is E[y | x_t]."""
    if target == "velocity":
        return s.d_interp  # L_v = 1/2 |v|^2 - I_dot . v
    if target == "drift":
        return s.dx_t  # L_b = 1/2 |b|^2 - (I_dot + gamma' z) . b
    if target == "denoiser":
        return -s.noise  # L_eta = 1/2 |eta|^2 + z . eta
    return -s.noise / expand_like(s.noise_scale, s.noise)  # L_s = 1/2 |s|^2 + z . s / gamma


class InterpolantLoss:
    """Stochastic-interpolant objective for one field, one value per example.

    With f = model(x_t, t, cond), t = t_min + (t_max - t_min) u, u ~ pi (uniform by default):

        velocity  L_v   = 1/2 |f|^2 - I_dot . f                 minimiser E[I_dot | x_t] = v
        drift     L_b   = 1/2 |f|^2 - (I_dot + gamma' z) . f    minimiser b = v - gamma gamma' s
        denoiser  L_eta = 1/2 |f|^2 + z . f                     minimiser eta = -E[z | x_t]
        score     L_s   = 1/2 |f|^2 + z . f / gamma             minimiser s = -E[z | x_t] / gamma

    For a one-sided interpolant z is x_0 and gamma is alpha (L_s = 1/2 |s|^2 + x_0 . s / alpha).
    Each equals 1/2 |f - y|^2 minus a term free of f, so gradients match least squares; the value
    itself is the card's (sums over all non-batch dimensions, not means), so it can be compared
    with its Monte-Carlo value under an exact field.

    Antithetic sampling evaluates the loss at x_t^+ = I + gamma z with +z and at
    x_t^- = I - gamma z with -z and returns the mean of the two (the reference code sums them;
    the mean keeps the value comparable with the plain estimator and has the same minimiser).
    The 1/gamma term cancels to first order between the pair, which is what makes the score
    learnable near the endpoints. One-sided, the flipped Gaussian is x_0 itself:
    x_t^+- = beta x_1 +- alpha x_0, which is valid because x_0 ~ N(0, I) is symmetric; two-sided
    only z is flipped, since rho_0 need not be symmetric.

    Pitfall: 1/gamma (1/alpha one-sided) diverges at the endpoints; for ``"score"`` use
    ``antithetic=True`` and/or t_min, t_max inside (0, 1) (the card suggests delta = 1e-3). For
    ``"drift"`` with a sqrt-type gamma (``BrownianGamma``) gamma' is infinite at t = 0, 1.

    Args:
        interpolant: the stochastic interpolant.
        target: ``"velocity"``, ``"drift"``, ``"score"`` or ``"denoiser"``.
        antithetic: average the losses of the +-noise pair.
        t_min, t_max: training times are mapped affinely into [t_min, t_max].
        time_sampler: pi(u) on [0, 1], a callable ``(n, generator, device, dtype) -> (n,)``;
            None is uniform.

    References:
        Stochastic Interpolants: A Unifying Framework for Flows and Diffusions (Albergo, Boffi &
        Vanden-Eijnden, 2023), arXiv:2303.08797; reference code malbergo/stochastic-interpolants.

    Example:
        >>> from flowforge.paths.interpolant import StochasticInterpolant
        >>> loss = InterpolantLoss(StochasticInterpolant(one_sided=True), "score", antithetic=True,
        ...                        t_max=0.999)
        >>> zero = lambda x, t, cond=None: torch.zeros_like(x)
        >>> loss(zero, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).tolist()
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """

    def __init__(
        self,
        interpolant: StochasticInterpolant,
        target: InterpolantTarget,
        antithetic: bool = False,
        t_min: float = 0.0,
        t_max: float = 1.0,
        time_sampler: TimeSampler | None = None,
    ) -> None:
        check_choice("target", target, _TARGETS)
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(
                f"t_min={t_min!r}, t_max={t_max!r}: need 0 <= t_min < t_max <= 1 "
                "(e.g. t_min=0.001, t_max=0.999 for a score)."
            )
        self.interpolant, self.target, self.antithetic = interpolant, target, antithetic
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.time_sampler = UniformTime() if time_sampler is None else time_sampler

    def _times(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        u = self.time_sampler(n, generator=generator, device=device, dtype=dtype)
        return self.t_min + (self.t_max - self.t_min) * u  # (B,)

    def _loss(self, model: Field, s: InterpolantSample, cond: Tensor | None) -> Tensor:
        f = model(s.x_t, s.t, cond)  # (B, ...)
        y = _regression_target(s, self.target)
        return (0.5 * f.square() - y * f).flatten(1).sum(1)  # (B,)

    def __call__(
        self,
        model: Field,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        x_0: Tensor | None = None,
    ) -> Tensor:
        """Args: model(x, t, cond) -> (B, ...); x_1: (B, ...) data; cond: (B, ...) or None;
        generator for x_0, t and z; x_0: (B, ...) base samples from rho_0 (None draws N(0, I),
        as a one-sided interpolant requires). Same order as every objective, so it plugs into
        ``flowforge.train.train``.

        Returns: (B,) per-example losses.
        """
        check_batch("cond", cond, x_1.shape[0], ref="x_1")
        if x_0 is None:
            x_0 = randn_like_gen(x_1, generator)
        check_same_shape("x_0", x_0, "x_1", x_1)
        t = self._times(x_1.shape[0], generator, x_1.device, x_1.dtype)
        si = self.interpolant
        z = None
        if not si.one_sided:
            z = randn_like_gen(x_1, generator)
        loss = self._loss(model, si.sample(x_0, x_1, t, z=z), cond)
        if not self.antithetic:
            return loss
        # The antithetic partner flips the latent Gaussian: z two-sided, x_0 one-sided.
        minus = si.sample(-x_0, x_1, t) if si.one_sided else si.sample(x_0, x_1, t, z=-z)
        return 0.5 * (loss + self._loss(model, minus, cond))

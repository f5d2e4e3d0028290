"""Stochastic interpolants x_t = alpha(t) x_0 + beta(t) x_1 + gamma(t) z between two densities.

A stochastic interpolant bridges any base rho_0 (t = 0) and any data rho_1 (t = 1) with a
latent Gaussian z ~ N(0, I) independent of (x_0, x_1). Its time marginals rho_t are transported by
the probability-flow ODE dX = b(X, t) dt and, for any eps(t) >= 0, by the forward SDE
dX = [b + eps s] dt + sqrt(2 eps) dW, where

* ``velocity`` v(x, t) = E[I_dot | x_t = x],  I_dot = alpha' x_0 + beta' x_1,
* ``drift``    b(x, t) = E[I_dot + gamma' z | x_t = x] = v - gamma gamma' s,
* ``denoiser`` eta(x, t) = -E[z | x_t = x]   (the reference code's sign),
* ``score``    s(x, t) = grad log rho_t(x) = eta / gamma.

One-sided interpolants (Gaussian base x_0 ~ N(0, I), no extra z) write x_t = alpha x_0 + beta x_1;
then x_0 is the latent noise and alpha replaces gamma in the score formulas: eta = -E[x_0 | x_t],
s = eta / alpha, and b = v.

Naming trap: here (as in the paper) ``alpha`` multiplies the base x_0 and ``beta`` the data x_1.
In ``flowforge.paths.affine.AffinePath`` ``alpha_t`` multiplies the data x_1. The one-sided linear
interpolant equals ``CondOTPath`` and the one-sided trig interpolant equals ``CosinePath``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from flowforge.utils.checks import check_choice, check_same_shape, check_time
from flowforge.utils.tensor import expand_like

__all__ = [
    "GammaSchedule",
    "ZeroGamma",
    "BrownianGamma",
    "BSquaredGamma",
    "SineSquaredGamma",
    "InterpolantKind",
    "InterpolantSample",
    "StochasticInterpolant",
]

InterpolantKind = Literal["linear", "trig"]


class GammaSchedule(abc.ABC):
    """The latent-noise scale gamma(t) of a two-sided interpolant, gamma(0) = gamma(1) = 0.

    Subclasses give gamma, its derivative and the product gamma * gamma' analytically: for
    sqrt-type schedules gamma' is infinite at the endpoints while gamma gamma' stays finite, and
    the drift/score relation b = v - gamma gamma' s needs only the product.
    """

    @abc.abstractmethod
    def value(self, t: Tensor) -> Tensor:
        """gamma(t), (B,) -> (B,)."""

    @abc.abstractmethod
    def derivative(self, t: Tensor) -> Tensor:
        """d gamma / dt, (B,) -> (B,) (may be infinite at t = 0, 1)."""

    @abc.abstractmethod
    def gamma_d_gamma(self, t: Tensor) -> Tensor:
        """gamma(t) gamma'(t), (B,) -> (B,), finite on [0, 1]."""


class ZeroGamma(GammaSchedule):
    """gamma = 0: a deterministic interpolant (use with ``one_sided=True`` for a Gaussian base).

    Example:
        >>> ZeroGamma().value(torch.tensor([0.5])).tolist()
        [0.0]
    """

    def value(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def derivative(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def gamma_d_gamma(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


class BrownianGamma(GammaSchedule):
    """Brownian-bridge scale gamma = sqrt(a t (1 - t)), gamma gamma' = a (1 - 2t) / 2.

    Args:
        a: the bridge variance factor, > 0 (``"brownian"`` is a = 1, ``"a-brownian"`` general a).

    References:
        Stochastic Interpolants (Albergo, Boffi & Vanden-Eijnden, 2023), arXiv:2303.08797.

    Example:
        >>> g = BrownianGamma(); t = torch.tensor([0.0, 0.5, 1.0])
        >>> g.value(t).tolist(), g.gamma_d_gamma(t).tolist()
        ([0.0, 0.5, 0.0], [0.5, 0.0, -0.5])
    """

    def __init__(self, a: float = 1.0) -> None:
        if not a > 0:
            raise ValueError(f"a={a!r} must be positive (a = 1 is the Brownian bridge).")
        self.a = float(a)

    def value(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.a * t * (1 - t))

    def derivative(self, t: Tensor) -> Tensor:
        return self.a * (1 - 2 * t) / (2 * self.value(t))

    def gamma_d_gamma(self, t: Tensor) -> Tensor:
        return 0.5 * self.a * (1 - 2 * t)


class BSquaredGamma(GammaSchedule):
    """gamma = t (1 - t), gamma' = 1 - 2t (the reference code's ``"bsquared"``).

    Example:
        >>> BSquaredGamma().value(torch.tensor([0.5])).tolist()
        [0.25]
    """

    def value(self, t: Tensor) -> Tensor:
        return t * (1 - t)

    def derivative(self, t: Tensor) -> Tensor:
        return 1 - 2 * t

    def gamma_d_gamma(self, t: Tensor) -> Tensor:
        return t * (1 - t) * (1 - 2 * t)


class SineSquaredGamma(GammaSchedule):
    """gamma = sin^2(pi t), gamma' = pi sin(2 pi t) (the reference code's ``"sinesquared"``).

    Example:
        >>> SineSquaredGamma().value(torch.tensor([0.5])).tolist()
        [1.0]
    """

    def value(self, t: Tensor) -> Tensor:
        return torch.sin(math.pi * t) ** 2

    def derivative(self, t: Tensor) -> Tensor:
        return math.pi * torch.sin(2 * math.pi * t)

    def gamma_d_gamma(self, t: Tensor) -> Tensor:
        return self.value(t) * self.derivative(t)


@dataclass
class InterpolantSample:
    """A point x_t of a stochastic interpolant and every regression target at it.

    Attributes:
        x_t: (B, ...) alpha x_0 + beta x_1 + gamma z.
        dx_t: (B, ...) d x_t / dt at fixed (x_0, x_1, z) = I_dot + gamma' z, the drift target
            (infinite at t = 0, 1 for sqrt-type gamma such as ``BrownianGamma``).
        t: (B,) the times.
        x_0: (B, ...) the base endpoint.
        x_1: (B, ...) the data endpoint.
        z: (B, ...) the extra latent noise; zeros for a one-sided interpolant.
        d_interp: (B, ...) I_dot = alpha' x_0 + beta' x_1, the velocity target.
        gamma: (B,) gamma(t) (zeros for a one-sided interpolant).
        noise: (B, ...) the Gaussian whose posterior mean gives the score: z (two-sided) or
            x_0 (one-sided).
        noise_scale: (B,) its coefficient in x_t: gamma(t) (two-sided) or alpha(t) (one-sided).
    """

    x_t: Tensor
    dx_t: Tensor
    t: Tensor
    x_0: Tensor
    x_1: Tensor
    z: Tensor
    d_interp: Tensor
    gamma: Tensor
    noise: Tensor
    noise_scale: Tensor


class StochasticInterpolant:
    """Interpolant x_t = alpha(t) x_0 + beta(t) x_1 + gamma(t) z, z ~ N(0, I) (t = 0 base, 1 data).

    * ``"linear"``: alpha = 1 - t, beta = t.
    * ``"trig"``: alpha = sqrt(1 - gamma^2) cos(pi t / 2), beta = sqrt(1 - gamma^2) sin(pi t / 2),
      so alpha^2 + beta^2 + gamma^2 = 1; derivatives include the sqrt(1 - gamma^2) factor, whose
      derivative -gamma gamma' / sqrt(1 - gamma^2) uses the finite product gamma gamma'.

    ``one_sided=True`` (Gaussian base x_0 ~ N(0, I), ``gamma`` must be ``ZeroGamma``) uses x_0 as
    the latent noise: eta = -E[x_0 | x_t], s = eta / alpha, b = v.

    This is not a ``ProbPath`` subclass: ``sample`` draws extra noise z (with a generator) and
    returns an ``InterpolantSample`` carrying four targets, not a ``PathSample``; and a two-sided
    base need not be Gaussian, so ``AffinePath.convert`` does not apply. ``InterpolantSample``
    still has ``x_t``, ``dx_t`` (the drift target), ``t``, ``x_0`` and ``x_1``, so code that only
    reads those attributes (a flow-matching regression) works with it unchanged and learns b.

    Args:
        interpolant: ``"linear"`` or ``"trig"``.
        gamma: the noise schedule (``ZeroGamma()``, ``BrownianGamma(a)``, ``BSquaredGamma()``,
            ``SineSquaredGamma()`` or your own ``GammaSchedule``).
        one_sided: Gaussian base and no extra z.

    References:
        Stochastic Interpolants: A Unifying Framework for Flows and Diffusions (Albergo, Boffi &
        Vanden-Eijnden, 2023), arXiv:2303.08797.

    Example:
        >>> si = StochasticInterpolant("linear", BrownianGamma())
        >>> x_0, x_1 = torch.zeros(2, 3), torch.ones(2, 3)
        >>> s = si.sample(x_0, x_1, torch.tensor([0.0, 1.0]))
        >>> torch.equal(s.x_t[0], x_0[0]), torch.equal(s.x_t[1], x_1[1])
        (True, True)
    """

    def __init__(
        self,
        interpolant: InterpolantKind = "linear",
        gamma: GammaSchedule | None = None,
        one_sided: bool = False,
    ) -> None:
        check_choice("interpolant", interpolant, ("linear", "trig"))
        gamma = ZeroGamma() if gamma is None else gamma
        if not isinstance(gamma, GammaSchedule):
            raise TypeError(
                f"gamma={gamma!r} is not a GammaSchedule; pass e.g. BrownianGamma() or "
                "ZeroGamma()."
            )
        if one_sided and not isinstance(gamma, ZeroGamma):
            raise ValueError(
                f"one_sided=True with gamma={type(gamma).__name__}: a one-sided interpolant has "
                "no extra noise (x_0 is the noise); pass gamma=ZeroGamma() or one_sided=False."
            )
        if interpolant == "trig":
            grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
            if gamma.value(grid).max() >= 1:
                raise ValueError(
                    f"gamma={type(gamma).__name__} reaches gamma >= 1, so sqrt(1 - gamma^2) of "
                    "the trig interpolant is not differentiable; use a gamma < 1 (BrownianGamma "
                    "needs a < 4) or interpolant='linear'."
                )
        self.interpolant, self.gamma, self.one_sided = interpolant, gamma, one_sided

    # Coefficients, (B,) -> (B,); alpha multiplies x_0, beta multiplies x_1 (paper notation).
    def _r(self, t: Tensor) -> Tensor:
        return torch.sqrt(1 - self.gamma.value(t) ** 2)  # sqrt(1 - gamma^2)

    def _d_r(self, t: Tensor) -> Tensor:
        return -self.gamma.gamma_d_gamma(t) / self._r(t)

    def alpha(self, t: Tensor) -> Tensor:
        """Base coefficient alpha(t): 1 - t or sqrt(1 - gamma^2) cos(pi t / 2)."""
        if self.interpolant == "linear":
            return 1 - t
        return self._r(t) * torch.cos(0.5 * math.pi * t)

    def beta(self, t: Tensor) -> Tensor:
        """Data coefficient beta(t): t or sqrt(1 - gamma^2) sin(pi t / 2)."""
        if self.interpolant == "linear":
            return t.clone()
        return self._r(t) * torch.sin(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt."""
        if self.interpolant == "linear":
            return -torch.ones_like(t)
        c, s = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
        return self._d_r(t) * c - 0.5 * math.pi * self._r(t) * s

    def d_beta(self, t: Tensor) -> Tensor:
        """d beta / dt."""
        if self.interpolant == "linear":
            return torch.ones_like(t)
        c, s = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
        return self._d_r(t) * s + 0.5 * math.pi * self._r(t) * c

    def noise_scale(self, t: Tensor) -> Tensor:
        """Coefficient of the latent noise in x_t: gamma(t), or alpha(t) if one-sided."""
        return self.alpha(t) if self.one_sided else self.gamma.value(t)

    def sample(
        self,
        x_0: Tensor,
        x_1: Tensor,
        t: Tensor,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> InterpolantSample:
        """Draw x_t and its regression targets.

        Args:
            x_0: (B, ...) base samples (N(0, I) for a one-sided interpolant).
            x_1: (B, ...) data samples.
            t: (B,) times in [0, 1].
            z: (B, ...) the latent noise; drawn from N(0, I) with ``generator`` when None.
                Ignored (zeros) for a one-sided interpolant.
            generator: the random generator for z.

        Returns:
            InterpolantSample with x_t, dx_t = I_dot + gamma' z, d_interp = I_dot, z, noise and
            noise_scale.
        """
        check_same_shape("x_0", x_0, "x_1", x_1)
        check_time("t", t, batch=x_1.shape[0])
        if self.one_sided:
            z = torch.zeros_like(x_1)
        elif z is None:
            z = torch.randn(x_1.shape, generator=generator, device=x_1.device, dtype=x_1.dtype)
        else:
            check_same_shape("z", z, "x_1", x_1)
        alpha, beta = expand_like(self.alpha(t), x_1), expand_like(self.beta(t), x_1)
        d_alpha, d_beta = expand_like(self.d_alpha(t), x_1), expand_like(self.d_beta(t), x_1)
        gamma_t = self.gamma.value(t)  # (B,)
        d_interp = d_alpha * x_0 + d_beta * x_1  # I_dot
        if self.one_sided:
            x_t, dx_t = alpha * x_0 + beta * x_1, d_interp
            noise, noise_scale = x_0, self.alpha(t)
        else:
            x_t = alpha * x_0 + beta * x_1 + expand_like(gamma_t, x_1) * z
            dx_t = d_interp + expand_like(self.gamma.derivative(t), x_1) * z
            noise, noise_scale = z, gamma_t
        return InterpolantSample(
            x_t=x_t,
            dx_t=dx_t,
            t=t,
            x_0=x_0,
            x_1=x_1,
            z=z,
            d_interp=d_interp,
            gamma=gamma_t,
            noise=noise,
            noise_scale=noise_scale,
        )

    def drift_from_velocity_score(self, v: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """b = v - gamma gamma' s (one-sided: b = v).

        Args:
            v: (B, ...) velocity E[I_dot | x_t].
            s: (B, ...) score at the same (x_t, t).
            t: (B,) times.

        Returns:
            (B, ...) the drift b.

        Example:
            >>> si = StochasticInterpolant("linear", BrownianGamma())
            >>> si.drift_from_velocity_score(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1))
            tensor([[0.5000, 0.5000]])
        """
        check_same_shape("v", v, "s", s)
        check_time("t", t, batch=v.shape[0])
        return v - expand_like(self.gamma.gamma_d_gamma(t), v) * s

    def velocity_from_drift_score(self, b: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """v = b + gamma gamma' s, the inverse of ``drift_from_velocity_score``."""
        check_same_shape("b", b, "s", s)
        check_time("t", t, batch=b.shape[0])
        return b + expand_like(self.gamma.gamma_d_gamma(t), b) * s

    def score_from_denoiser(self, eta: Tensor, t: Tensor) -> Tensor:
        """s = eta / gamma (one-sided: eta / alpha), with eta = -E[noise | x_t].

        Singular where the noise scale vanishes (t = 0, 1 two-sided; t = 1 one-sided).

        Args:
            eta: (B, ...) denoiser output.
            t: (B,) times.

        Returns:
            (B, ...) the score.

        Example:
            >>> si = StochasticInterpolant("linear", one_sided=True)
            >>> si.score_from_denoiser(torch.ones(1, 2), torch.tensor([0.5]))
            tensor([[2., 2.]])
        """
        check_time("t", t, batch=eta.shape[0])
        return eta / expand_like(self.noise_scale(t), eta)

    def denoiser_from_score(self, s: Tensor, t: Tensor) -> Tensor:
        """eta = gamma s (one-sided: alpha s), the inverse of ``score_from_denoiser``."""
        check_time("t", t, batch=s.shape[0])
        return s * expand_like(self.noise_scale(t), s)

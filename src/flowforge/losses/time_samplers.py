"""Training-time densities pi(t) over [0, 1], as small objects (t = 0 noise, t = 1 data).

Each sampler is a callable ``sampler(n, generator=None, device=None, dtype=float32) -> (n,)`` and
knows its density ``pi(t)`` (``log_density``), so tests and plots can compare histograms with the
formula and losses can reweight by density ratios.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from flowforge.paths.time import shift_time

__all__ = [
    "TimeDensity",
    "UniformTime",
    "LogitNormalTime",
    "ModeTime",
    "CosMapTime",
    "UShapedTime",
    "ShiftedTime",
]


def _uniform(
    n: int,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


class TimeDensity(abc.ABC):
    """A density on [0, 1] that draws training times: ``sampler(n) -> (n,)``."""

    @abc.abstractmethod
    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` times, shape ``(n,)``."""

    @abc.abstractmethod
    def log_density(self, t: Tensor) -> Tensor:
        """log pi(t) for t in (0, 1)."""


class UniformTime(TimeDensity):
    """t ~ U(0, 1).

    Example:
        >>> UniformTime()(4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4])
    """

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return _uniform(n, generator, device, dtype)

    def log_density(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


class LogitNormalTime(TimeDensity):
    """Logit-normal t = sigmoid(u), u ~ N(loc, scale^2).

    pi(t) = 1 / (scale sqrt(2 pi) t (1 - t)) exp(-(logit t - loc)^2 / (2 scale^2)).
    In flowforge time (t = 0 noise), SD3's ``rf/lognorm(m, s)`` (their t = 1 noise) is
    ``LogitNormalTime(loc=-m, scale=s)``; the default (0, 1) is the paper's best setting.

    Args:
        loc: mean of the logit; positive values favour the data end.
        scale: standard deviation of the logit, > 0.

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Eq. 19.

    Example:
        >>> t = LogitNormalTime()(10_000, generator=torch.Generator().manual_seed(0))
        >>> abs(t.median().item() - 0.5) < 0.02
        True
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"scale={scale!r} must be positive (1.0 is SD3's default).")
        self.loc, self.scale = float(loc), float(scale)

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        u = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.loc + self.scale * u)

    def log_density(self, t: Tensor) -> Tensor:
        logit = torch.log(t) - torch.log1p(-t)
        return (
            -0.5 * ((logit - self.loc) / self.scale) ** 2
            - math.log(self.scale * math.sqrt(2 * math.pi))
            - torch.log(t)
            - torch.log1p(-t)
        )


class ModeTime(TimeDensity):
    """Mode sampling with heavy tails: t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1).

    f(1 - u) = 1 - f(u), so the density is symmetric about 1/2 and reads the same in either time
    convention. s = 0 is uniform; valid for -1 <= s <= 2 / (pi - 2); SD3's default s = 1.29
    concentrates mass in the middle while keeping both tails.

    Args:
        scale: s.

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Eq. 20.

    Example:
        >>> t = ModeTime(0.0)(5, generator=torch.Generator().manual_seed(0))  # s = 0: t = 1 - u
        >>> torch.allclose(t, 1 - UniformTime()(5, generator=torch.Generator().manual_seed(0)))
        True
    """

    def __init__(self, scale: float = 1.29) -> None:
        if not -1.0 <= scale <= 2.0 / (math.pi - 2.0):
            raise ValueError(
                f"scale={scale!r} is outside [-1, 2/(pi-2) = 1.752]; the map would not be "
                "monotone. 1.29 is SD3's default."
            )
        self.scale = float(scale)

    def _f(self, u: Tensor) -> Tensor:
        return 1 - u - self.scale * (torch.cos(0.5 * math.pi * u) ** 2 - 1 + u)

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return self._f(_uniform(n, generator, device, dtype))

    def log_density(self, t: Tensor) -> Tensor:
        # pi(t) = 1 / |f'(u)| at u = f^{-1}(t); invert f by bisection (f is decreasing).
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self._f(mid) > t
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        u = 0.5 * (lo + hi)
        df = -1 - self.scale * (1 - 0.5 * math.pi * torch.sin(math.pi * u))
        return -torch.log(df.abs())


class CosMapTime(TimeDensity):
    """CosMap: t = 1 / (tan(pi u / 2) + 1), u ~ U(0, 1), density 2 / (pi (1 - 2t + 2t^2)).

    The density is symmetric about 1/2 (SD3 writes 1 - 1/(tan + 1) for its t = 1 noise).

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Eq. 21.

    Example:
        >>> CosMapTime()(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3])
    """

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        u = _uniform(n, generator, device, dtype)
        return 1 / (torch.tan(0.5 * math.pi * u) + 1)

    def log_density(self, t: Tensor) -> Tensor:
        return math.log(2 / math.pi) - torch.log(1 - 2 * t + 2 * t**2)


class UShapedTime(TimeDensity):
    """U-shaped density pi(t) proportional to exp(a t) + exp(a (1 - t)), mass at both ends.

    Sampled exactly by the inverse CDF of the truncated exponential, u = ln(1 + U (e^a - 1)) / a,
    mirrored with probability 1/2, then mapped to [t_min, t_max].

    Args:
        a: concentration, > 0 (4 in rf++).
        t_min, t_max: the support after the affine map (1e-5, 1 - 1e-5 in rf++).

    References:
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320, Sec. 3.1.

    Example:
        >>> t = UShapedTime()(20_000, generator=torch.Generator().manual_seed(0))
        >>> bool(((t < 0.1) | (t > 0.9)).float().mean() > 0.3)
        True
    """

    def __init__(self, a: float = 4.0, t_min: float = 1e-5, t_max: float = 1 - 1e-5) -> None:
        if not a > 0:
            raise ValueError(f"a={a!r} must be positive (rf++ uses 4).")
        if not 0 <= t_min < t_max <= 1:
            raise ValueError(f"t_min={t_min!r}, t_max={t_max!r}: need 0 <= t_min < t_max <= 1.")
        self.a, self.t_min, self.t_max = float(a), float(t_min), float(t_max)

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        u = _uniform(2 * n, generator, device, dtype)
        s = torch.log1p(u[:n] * math.expm1(self.a)) / self.a  # truncated exponential on [0, 1]
        t = torch.where(u[n:] < 0.5, s, 1 - s)  # mirror half of the draws
        return t * (self.t_max - self.t_min) + self.t_min

    def log_density(self, t: Tensor) -> Tensor:
        width = self.t_max - self.t_min
        s = (t - self.t_min) / width
        # Mixture 1/2 a e^{a s}/(e^a - 1) + 1/2 a e^{a(1-s)}/(e^a - 1), then the affine Jacobian.
        log_norm = math.log(0.5 * self.a / math.expm1(self.a))
        return log_norm + torch.logaddexp(self.a * s, self.a * (1 - s)) - math.log(width)


class ShiftedTime(TimeDensity):
    """Apply SD3's resolution shift to another density: t' = shift_time(t, shift).

    shift > 1 moves mass toward the noise end (t = 0), as for larger images.

    Args:
        base: the density to shift.
        shift: alpha > 0, e.g. sqrt(m / n) for m target and n base pixels.

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Sec. 5.3.2.

    Example:
        >>> s = ShiftedTime(UniformTime(), 3.0)(10_000, generator=torch.Generator().manual_seed(0))
        >>> bool(s.mean() < 0.5)
        True
    """

    def __init__(self, base: TimeDensity, shift: float) -> None:
        if not shift > 0:
            raise ValueError(f"shift={shift!r} must be positive (1 leaves times unchanged).")
        self.base, self.shift = base, float(shift)

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return shift_time(self.base(n, generator, device, dtype), self.shift)

    def log_density(self, t: Tensor) -> Tensor:
        # t = g(s) with g the shift; s = g^{-1}(t) is the shift by 1/a; dg/ds = a / (a - (a-1)s)^2.
        a = self.shift
        s = shift_time(t, 1 / a)
        return self.base.log_density(s) - torch.log(torch.as_tensor(a) / (a - (a - 1) * s) ** 2)

"""EDM noise levels: the preconditioned denoiser and its link to the flowforge time convention.

EDM (Karras et al., 2022) writes a noisy sample as ``x = x_1 + sigma n`` with n ~ N(0, I) and
learns a denoiser D(x, sigma) ~ E[x_1 | x]. A noise level is ``sigma`` in [0, inf), never ``t``.
On the straight path x_t = t x_1 + (1 - t) x_0 (t = 0 noise, t = 1 data), dividing by t gives

    x_t / t = x_1 + ((1 - t) / t) x_0,

an EDM sample at noise level sigma = (1 - t) / t. So, with x_0_hat = (x_t - t x_1_hat) / (1 - t),

    sigma = (1 - t) / t,      t = 1 / (1 + sigma),      x_edm = x_t / t = (1 + sigma) x_t,
    x_1_hat = D(x_t / t, sigma),
    v(x_t, t) = x_1_hat - x_0_hat = (x_1_hat - x_t) / (1 - t),
    D(x, sigma) = x_t + (1 - t) v(x_t, t)  with  x_t = t x.

The map is singular at both ends: t -> 0 is sigma -> inf (x_t / t blows up) and t -> 1 is
sigma -> 0 (v is 0/0). ``DenoiserAsVelocity`` therefore evaluates the denoiser at t clipped to
[t(sigma_max), t(sigma_min)], the noise range the EDM denoiser was trained and sampled on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowforge.protocols import Field
from flowforge.utils import expand_like, per_example, wider_float

__all__ = [
    "Denoiser",
    "DenoiserAsVelocity",
    "EDMPrecond",
    "VelocityAsDenoiser",
    "sigma_from_t",
    "t_from_sigma",
]

Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""An EDM denoiser ``D(x, sigma, cond) -> (B, ...)`` estimating E[x_1 | x] at noise level sigma."""


def sigma_from_t(t: Tensor) -> Tensor:
    """EDM noise level of flowforge time t on the straight path: sigma = (1 - t) / t.

    t = 0 (pure noise) gives sigma = inf; t = 1 (data) gives sigma = 0.

    Args:
        t: (B,) times in [0, 1].

    Returns:
        (B,) noise levels in [0, inf].

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Table 1 (sigma(t) and s(t) of each formulation).

    Example:
        >>> sigma_from_t(torch.tensor([0.5, 1.0, 0.0])).tolist()
        [1.0, 0.0, inf]
    """
    return (1 - t) / t


def t_from_sigma(sigma: Tensor) -> Tensor:
    """Flowforge time of an EDM noise level on the straight path: t = 1 / (1 + sigma).

    Args:
        sigma: (B,) noise levels in [0, inf].

    Returns:
        (B,) times in [0, 1]; sigma = inf gives t = 0.

    Example:
        >>> t_from_sigma(torch.tensor([1.0, 0.0, float("inf")])).tolist()
        [0.5, 1.0, 0.0]
    """
    return 1 / (1 + sigma)


class EDMPrecond(nn.Module):
    """EDM preconditioning: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond).

        c_skip = sd^2 / (sigma^2 + sd^2),       c_out = sigma sd / sqrt(sigma^2 + sd^2),
        c_in = 1 / sqrt(sigma^2 + sd^2),        c_noise = ln(sigma) / 4,

    with sd = ``sigma_data`` (Karras et al., Table 1 and Eq. 7). The inner network keeps the
    flowforge field signature ``net(x, t_like, cond)``; it receives c_noise, shape (B,), in its
    time slot. c_noise is a real number, roughly in [-1.6, 1.1] for sigma in [0.002, 80], not a
    time in [0, 1]: use a network whose time input accepts any real value (``MLPField``'s
    sinusoidal embedding does). At sigma = 0 the output is exactly x (c_out = 0); c_noise is then
    computed from the smallest positive float so that the network never sees -inf.

    Args:
        net: the raw network F(x, c_noise, cond) -> (B, ...).
        sigma_data: sd, the standard deviation of the data (0.5 in EDM).

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Sec. 5 and Table 1 (code: NVlabs/edm ``training/networks.py``,
        ``EDMPrecond``).

    Example:
        >>> D = EDMPrecond(lambda x, t, cond=None: torch.zeros_like(x))  # F = 0
        >>> D(torch.ones(2, 3), torch.tensor([0.5, 0.0]))[:, 0].tolist()  # c_skip x
        [0.5, 1.0]
    """

    def __init__(self, net: Field, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(
                f"sigma_data={sigma_data!r} must be positive: the data standard deviation "
                "(0.5 in EDM for data scaled to [-1, 1])."
            )
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The preconditioning (c_skip, c_out, c_in, c_noise) at noise levels ``sigma`` (B,)."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.clamp_min(torch.finfo(sigma.dtype).tiny).log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...); sigma: (B,) noise levels >= 0 (or a scalar); cond: passed to net.

        Returns: (B, ...) the denoised estimate of x_1, in float32 or wider (as in EDM, the
        network sees its input in x's dtype while the skip path stays in full precision).
        """
        x_w = x.to(wider_float(x.dtype))  # coefficients and skip path in float32 or wider
        sigma = per_example("sigma", sigma, x_w)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F_x = self.net((expand_like(c_in, x_w) * x_w).to(x.dtype), c_noise, cond)  # (B, ...)
        return expand_like(c_skip, x_w) * x_w + expand_like(c_out, x_w) * F_x.to(x_w.dtype)


class DenoiserAsVelocity(nn.Module):
    """The straight-path velocity field of an EDM denoiser (the flowforge field contract).

        sigma = (1 - t) / t,   x_1_hat = D(x_t / t, sigma),   v = (x_1_hat - x_t) / (1 - t).

    This is ``CondOTPath().convert(x_1_hat, x_t, t, "x1", "velocity")``; any flowforge solver can
    then integrate an EDM-trained denoiser from t = 0 to 1. Because sigma -> inf at t = 0 and the
    velocity is 0/0 at t = 1, t is clipped to [1 / (1 + sigma_max), 1 / (1 + sigma_min)] before
    the denoiser is called: outside that range the field is the one at the nearest end.

    Args:
        denoiser: D(x, sigma, cond) -> (B, ...), e.g. an ``EDMPrecond``.
        sigma_min, sigma_max: the noise range of the denoiser (EDM: 0.002 and 80).

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Eq. 4 and Table 1.
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.

    Example:
        >>> D = lambda x, sigma, cond=None: torch.zeros_like(x)  # data is the point 0
        >>> v = DenoiserAsVelocity(D)
        >>> v(torch.ones(1, 2), torch.tensor([0.5])).tolist()  # (0 - x_t) / (1 - t)
        [[-2.0, -2.0]]
    """

    def __init__(
        self, denoiser: Denoiser, sigma_min: float = 0.002, sigma_max: float = 80.0
    ) -> None:
        super().__init__()
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(
                f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: need 0 < sigma_min < "
                "sigma_max < inf (EDM uses 0.002 and 80)."
            )
        self.denoiser = denoiser
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...) the state x_t; t: (B,) times; cond: passed on. Returns: (B, ...)."""
        t = t.to(x.dtype).clamp(1 / (1 + self.sigma_max), 1 / (1 + self.sigma_min))
        t_ = expand_like(t, x)  # (B, 1, ..., 1)
        x_1 = self.denoiser(x / t_, sigma_from_t(t), cond)  # x_edm = x_t / t
        return (x_1 - x) / (1 - t_)


class VelocityAsDenoiser(nn.Module):
    """The EDM denoiser of a straight-path velocity field, the inverse of ``DenoiserAsVelocity``.

        t = 1 / (1 + sigma),   x_t = t x,   D(x, sigma) = x_t + (1 - t) v(x_t, t).

    With it a flowforge velocity field runs in EDM samplers (``sample_edm_heun``). sigma = 0
    gives D = x; sigma = inf calls the field at t = 0 with x_t = 0 times x, which is finite only
    for finite x, so start EDM samplers at a finite sigma_max.

    Args:
        field: v(x, t, cond) -> (B, ...), a velocity field on x_t = t x_1 + (1 - t) x_0.

    Example:
        >>> v = lambda x, t, cond=None: torch.ones_like(x)  # x_1_hat = x_t + (1 - t)
        >>> VelocityAsDenoiser(v)(torch.zeros(1, 2), torch.tensor([1.0])).tolist()
        [[0.5, 0.5]]
    """

    def __init__(self, field: Field) -> None:
        super().__init__()
        self.field = field

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...); sigma: (B,) or a scalar, >= 0; cond: passed on. Returns: (B, ...)."""
        t = t_from_sigma(per_example("sigma", sigma, x))  # (B,)
        t_ = expand_like(t, x)
        x_t = t_ * x
        return x_t + (1 - t_) * self.field(x_t, t, cond)

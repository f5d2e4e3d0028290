"""Seeded 2-D toy distributions: ``name(n, generator=None, **shape) -> (x, labels)``.

Every sampler returns ``x`` of shape (n, 2) in float32 and ``labels`` of shape (n,) in int64 (the
mixture component or part each point came from, usable as a class condition), draws labels
i.i.d. (so class counts vary with the draw), is vectorised, and is deterministic given
``generator``; samples are drawn on the generator's device (CPU when it is None). Noise
parameters are standard deviations in output units. Sets are scaled to a few units across,
like the cards' 8-gaussians (radius 4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "eight_gaussians",
    "eight_gaussians_log_prob",
    "eight_gaussians_params",
    "moons",
    "circles",
    "swiss_roll",
    "checkerboard",
    "pinwheel",
    "spirals",
]

_F32 = torch.float32


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _randn(n: int, d: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, generator=generator, device=_device(generator), dtype=_F32)


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=_device(generator), dtype=_F32)


def _labels(n: int, k: int, generator: torch.Generator | None) -> Tensor:
    return torch.randint(0, k, (n,), generator=generator, device=_device(generator))


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}; pass the number of samples as a non-negative int.")


def eight_gaussians_params(radius: float = 4.0, std: float = 0.5) -> tuple[Tensor, float]:
    """Means and standard deviation of the 8-gaussians mixture (the cards' shared toy kit).

    mu_k = radius (cos(k pi / 4), sin(k pi / 4)), k = 0..7, covariance std^2 I, weights 1/8, so
    p(x) = (1/8) sum_k N(x; mu_k, std^2 I).

    Args:
        radius: distance of every centre from the origin.
        std: per-coordinate standard deviation of each component.

    Returns:
        (means (8, 2) float32, std).

    Example:
        >>> means, std = eight_gaussians_params()
        >>> means[2].tolist(), std
        ([0.0, 4.0], 0.5)
    """
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)  # (8, 2)
    return means.round(decimals=12).to(_F32), std


def eight_gaussians_log_prob(
    x: Tensor, noise_std: float = 0.0, radius: float = 4.0, std: float = 0.5
) -> Tensor:
    """log p(x) (n,) of ``eight_gaussians`` convolved with N(0, noise_std^2 I): the mixture
    with std sqrt(std^2 + noise_std^2), in float64 (the optimum of a density fit).

    Example:
        >>> x, _ = eight_gaussians(20000, torch.Generator().manual_seed(0))
        >>> entropy = -eight_gaussians_log_prob(x).mean().item()  # Monte Carlo, nats
        >>> separated = math.log(8) + math.log(2 * math.pi * math.e * 0.5**2)  # 3.531
        >>> abs(entropy - separated) < 0.05
        True
    """
    means, std = eight_gaussians_params(radius, std)
    s2 = std**2 + noise_std**2
    d2 = (x.double()[:, None, :] - means.double()[None]).square().sum(-1)  # (n, 8)
    return torch.logsumexp(-d2 / (2 * s2), 1) - math.log(8 * 2 * math.pi * s2)


def eight_gaussians(
    n: int, generator: torch.Generator | None = None, radius: float = 4.0, std: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Equal mixture of 8 isotropic Gaussians on a circle; 8 classes (label = component k).

    x = radius (cos(k pi / 4), sin(k pi / 4)) + std eps, k ~ U{0..7}, eps ~ N(0, I); so
    E[x] = 0 and E||x||^2 = radius^2 + 2 std^2 (16.5 by default).

    Args:
        n: number of samples.
        generator: random source.
        radius: centre distance from the origin; std: component standard deviation.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, 8).

    References:
        Unrolled Generative Adversarial Networks (Metz et al., 2017), arXiv:1611.02163.

    Example:
        >>> x, k = eight_gaussians(4, torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype, k.dtype
        (torch.Size([4, 2]), torch.float32, torch.int64)
    """
    _check_n(n)
    means, std = eight_gaussians_params(radius, std)
    k = _labels(n, 8, generator)
    x = means.to(k.device)[k] + std * _randn(n, 2, generator)
    return x, k


def moons(
    n: int, generator: torch.Generator | None = None, noise: float = 0.1, scale: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Two interleaving half circles (scikit-learn's ``make_moons``); 2 classes (label = moon).

    Outer moon (label 0): (cos s, sin s); inner moon (label 1): (1 - cos s, 1/2 - sin s), with
    s ~ U[0, pi]. The union is centred on the origin (shifted by (-1/2, -1/4)) and multiplied by
    ``scale``, so the default set spans about [-3, 3] x [-1.5, 1.5]; then noise is added.

    Args:
        n: number of samples.
        generator: random source.
        noise: standard deviation of the Gaussian noise (0.1 is make_moons' 0.05 times scale).
        scale: factor applied to the centred unit-radius moons.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, 2).

    Example:
        >>> x, k = moons(1000, torch.Generator().manual_seed(0))
        >>> bool(x.mean(0).abs().max() < 0.2)
        True
    """
    _check_n(n)
    k = _labels(n, 2, generator)
    s = math.pi * _rand(n, generator)
    inner = (k == 1).to(_F32)
    sign = 1 - 2 * inner  # +1 outer, -1 inner
    px = inner + sign * s.cos()
    py = 0.5 * inner + sign * s.sin()
    x = scale * (
        torch.stack([px, py], dim=1) - torch.tensor([0.5, 0.25], dtype=_F32, device=k.device)
    )
    return x + noise * _randn(n, 2, generator), k


def circles(
    n: int,
    generator: torch.Generator | None = None,
    radius: float = 2.0,
    factor: float = 0.5,
    noise: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Two concentric circles; 2 classes (label 0 = outer circle, 1 = inner circle).

    x = r_k (cos s, sin s) + noise eps, s ~ U[0, 2 pi), r_0 = radius, r_1 = factor * radius.

    Args:
        n: number of samples.
        generator: random source.
        radius: outer radius; factor: inner radius / outer radius, in (0, 1).
        noise: standard deviation of the Gaussian noise.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, 2).

    Example:
        >>> x, k = circles(2000, torch.Generator().manual_seed(0), noise=0.0)
        >>> r = x.norm(dim=1)
        >>> torch.allclose(r, 2.0 - k.float(), atol=1e-5)
        True
    """
    _check_n(n)
    k = _labels(n, 2, generator)
    s = 2 * math.pi * _rand(n, generator)
    r = radius * (1 - (1 - factor) * k.to(_F32))  # (n,)
    x = r[:, None] * torch.stack([s.cos(), s.sin()], dim=1)
    return x + noise * _randn(n, 2, generator), k


def swiss_roll(
    n: int, generator: torch.Generator | None = None, noise: float = 0.1, num_bins: int = 4
) -> tuple[Tensor, Tensor]:
    """The 2-D Swiss roll (a spiral band); ``num_bins`` classes (label = position along the roll).

    u ~ U[0, 1), s = 1.5 pi (1 + 2u), x = (s cos s, s sin s) / 5 + noise eps (scikit-learn's
    ``make_swiss_roll`` in its (x, z) plane, divided by 5: about [-2.7, 2.9]^2); label
    floor(u num_bins), i.e. equal-length stretches from the inside out.

    Args:
        n: number of samples.
        generator: random source.
        noise: standard deviation of the Gaussian noise.
        num_bins: number of position classes along the roll.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, num_bins).

    Example:
        >>> x, k = swiss_roll(8, torch.Generator().manual_seed(0))
        >>> int(k.max()) < 4
        True
    """
    _check_n(n)
    u = _rand(n, generator)
    s = 1.5 * math.pi * (1 + 2 * u)
    x = torch.stack([s * s.cos(), s * s.sin()], dim=1) / 5
    k = (u * num_bins).long().clamp_max(num_bins - 1)
    return x + noise * _randn(n, 2, generator), k


def checkerboard(
    n: int, generator: torch.Generator | None = None, num_cells: int = 4, cell_size: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Uniform on the dark squares of a ``num_cells`` x ``num_cells`` board centred at 0.

    Cell (i, j) (column i, row j, from the lower left) is dark when i + j is even; there are
    K = num_cells^2 / 2 dark cells, numbered label = i * (num_cells / 2) + j // 2, so K classes
    (label = cell index; 8 on the default 4 x 4 board spanning [-4, 4]^2, FFJORD's toy).

    Args:
        n: number of samples.
        generator: random source.
        num_cells: cells per side, even.
        cell_size: side length of a cell.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, num_cells^2 / 2).

    References:
        FFJORD (Grathwohl et al., 2019), arXiv:1810.01367 (toy data).

    Example:
        >>> x, k = checkerboard(1000, torch.Generator().manual_seed(0))
        >>> cell = ((x + 4) / 2).floor().long()
        >>> bool(((cell[:, 0] + cell[:, 1]) % 2 == 0).all())
        True
    """
    _check_n(n)
    if num_cells < 2 or num_cells % 2:
        raise ValueError(f"num_cells={num_cells!r}; pass an even number of cells per side (>= 2).")
    half = num_cells // 2
    k = _labels(n, num_cells * half, generator)
    i = k // half  # column
    j = 2 * (k % half) + i % 2  # row, so that i + j is even
    cell = torch.stack([i, j], dim=1).to(_F32)  # (n, 2)
    u = torch.stack([_rand(n, generator), _rand(n, generator)], dim=1)
    return (cell + u - num_cells / 2) * cell_size, k


def pinwheel(
    n: int,
    generator: torch.Generator | None = None,
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> tuple[Tensor, Tensor]:
    """Curved Gaussian arms around the origin; ``num_arms`` classes (label = arm).

    f = (1 + radial_std e_1, tangential_std e_2), angle = 2 pi k / num_arms + rate exp(f_1),
    x = 2 R(-angle) f with R the rotation matrix, so arm k is arm 0 turned clockwise by
    2 pi k / num_arms (Johnson et al.'s pinwheel, as in FFJORD).

    Args:
        n: number of samples.
        generator: random source.
        num_arms: number of arms; radial_std, tangential_std: spread along and across an arm.
        rate: how strongly an arm bends with the radius.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, num_arms).

    References:
        Composing graphical models with neural networks (Johnson et al., 2016),
        arXiv:1603.06277.

    Example:
        >>> x, k = pinwheel(6, torch.Generator().manual_seed(0))
        >>> x.shape
        torch.Size([6, 2])
    """
    _check_n(n)
    k = _labels(n, num_arms, generator)
    f = _randn(n, 2, generator) * torch.tensor(
        [radial_std, tangential_std], dtype=_F32, device=k.device
    )
    f = f + torch.tensor([1.0, 0.0], dtype=_F32, device=k.device)
    angle = 2 * math.pi * k.to(_F32) / num_arms + rate * f[:, 0].exp()
    c, s = angle.cos(), angle.sin()
    # Row vector f times [[c, -s], [s, c]], as in the reference einsum("ti,tij->tj").
    x = torch.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], dim=1)
    return 2 * x, k


def spirals(
    n: int, generator: torch.Generator | None = None, noise: float = 0.1, turns: float = 1.5
) -> tuple[Tensor, Tensor]:
    """Two interleaved spirals, one the point reflection of the other; 2 classes (label = spiral).

    s = sqrt(u) 2 pi turns, p = (-s cos s, s sin s) + 0.5 v (u ~ U[0,1), v ~ U[0,1)^2 jitter),
    x = +-p / 3 + noise eps (+ for label 0, - for label 1); FFJORD's "2spirals" (1.5 turns).

    Args:
        n: number of samples.
        generator: random source.
        noise: standard deviation of the Gaussian noise.
        turns: number of turns of each spiral.

    Returns:
        x (n, 2) float32, labels (n,) int64 in [0, 2).

    References:
        FFJORD (Grathwohl et al., 2019), arXiv:1810.01367 (toy data).

    Example:
        >>> x, k = spirals(5, torch.Generator().manual_seed(0))
        >>> x.shape, set(k.tolist()) <= {0, 1}
        (torch.Size([5, 2]), True)
    """
    _check_n(n)
    k = _labels(n, 2, generator)
    s = _rand(n, generator).sqrt() * 2 * math.pi * turns
    jitter = 0.5 * torch.stack([_rand(n, generator), _rand(n, generator)], dim=1)
    p = torch.stack([-s * s.cos(), s * s.sin()], dim=1) + jitter
    sign = (1 - 2 * k).to(_F32)[:, None]
    return sign * p / 3 + noise * _randn(n, 2, generator), k

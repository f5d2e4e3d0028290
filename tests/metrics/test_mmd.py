import math

import pytest
import torch

from flowforge.metrics.mmd import (
    BANDWIDTH_SCALES,
    energy_distance,
    median_bandwidth,
    mmd2_unbiased,
)


def naive_mmd2(x, y, sigmas):
    def k(a, b):
        return sum(math.exp(-((a - b) ** 2).sum().item() / (2 * s * s)) for s in sigmas) / len(
            sigmas
        )

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def naive_energy(x, y):
    def dist(a, b):
        return ((a - b) ** 2).sum().sqrt().item()

    n, m = len(x), len(y)
    xx = sum(dist(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(dist(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(dist(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return 2 * xy - xx - yy


def test_reference_equality_with_loops():
    x, y = torch.randn(7, 3), torch.randn(5, 3) + 0.5
    sigmas = [0.5, 1.0, 3.0]
    assert mmd2_unbiased(x, y, sigmas).item() == pytest.approx(naive_mmd2(x, y, sigmas), rel=1e-10)
    assert energy_distance(x, y).item() == pytest.approx(naive_energy(x, y), rel=1e-10)


def gaussian_mmd2(delta_sq: float, s: float, d: int, sigmas: list[float]) -> float:
    # X ~ N(0, s^2 I_d), Y ~ N(delta, s^2 I_d), k = exp(-|a-b|^2 / (2 sigma^2)):
    # E k(X, X') = (sigma^2 / (sigma^2 + 2 s^2))^(d/2), E k(X, Y) = the same * exp(-|delta|^2 /
    # (2 (sigma^2 + 2 s^2))), so MMD^2 = 2 c (1 - exp(...)); the mixture averages over sigmas.
    total = 0.0
    for sigma in sigmas:
        v = sigma**2 + 2 * s**2
        c = (sigma**2 / v) ** (d / 2)
        total += 2 * c * (1 - math.exp(-delta_sq / (2 * v)))
    return total / len(sigmas)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_mmd_unbiased_against_gaussian_closed_form(shift):
    # The U-statistic's expectation is the population MMD^2 (0 for the same distribution):
    # mean over 300 repetitions within 4 standard errors.
    sigmas, reps = [0.5, 1.0, 2.0], 300
    g = torch.Generator().manual_seed(0)
    delta = torch.tensor([shift, 0.0])
    values = torch.stack(
        [
            mmd2_unbiased(
                torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g) + delta, sigmas
            )
            for _ in range(reps)
        ]
    )
    expected = gaussian_mmd2(shift**2, 1.0, 2, sigmas)
    se = (values.var() / reps).sqrt().item()
    assert abs(values.mean().item() - expected) < 4 * se
    if shift:  # and the shift is detected far beyond the noise
        assert expected > 10 * se


def test_default_bandwidths_are_median_times_scales():
    x, y = torch.randn(50, 3), torch.randn(60, 3) + 1
    sigmas = [median_bandwidth(x, y) * s for s in BANDWIDTH_SCALES]
    assert mmd2_unbiased(x, y).item() == pytest.approx(mmd2_unbiased(x, y, sigmas).item())


def test_median_bandwidth_known_value():
    # Pooled {0, 1, 3, 7}: distances 1, 3, 7, 2, 6, 4 -> lower median 3.
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [7.0]])
    assert median_bandwidth(x, y) == 3.0
    assert median_bandwidth(x, x) == 1.0  # distances {0, 1, 1, 1, 1, 0}: lower median 1.0


def _expected_abs(mean: float, var: float) -> float:
    # E|Z| for Z ~ N(mean, var): folded normal mean.
    s = math.sqrt(var)
    phi_cdf = 0.5 * (1 + math.erf(-mean / s / math.sqrt(2)))
    return s * math.sqrt(2 / math.pi) * math.exp(-(mean**2) / (2 * var)) + mean * (1 - 2 * phi_cdf)


@pytest.mark.parametrize("mu", [0.0, 1.0])
def test_energy_distance_against_1d_gaussian_closed_form(mu):
    # X ~ N(0, 1), Y ~ N(mu, 1): 2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(-mu, 2),
    # X - X' ~ N(0, 2); the unbiased estimate's mean over 300 repetitions is within 4 SE.
    reps = 300
    g = torch.Generator().manual_seed(1)
    values = torch.stack(
        [
            energy_distance(torch.randn(30, 1, generator=g), torch.randn(30, 1, generator=g) + mu)
            for _ in range(reps)
        ]
    )
    expected = 2 * _expected_abs(-mu, 2.0) - 2 * _expected_abs(0.0, 2.0)
    se = (values.var() / reps).sqrt().item()
    assert abs(values.mean().item() - expected) < 4 * se
    if mu:
        assert expected > 10 * se


def test_energy_gradient_finite_at_coincident_points():
    x = torch.randn(10, 2, requires_grad=True)
    energy_distance(x, x.detach().clone()).backward()
    assert torch.isfinite(x.grad).all()


def test_rejects_bad_input():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="positive kernel widths"):
        mmd2_unbiased(x, x, [1.0, -1.0])
    with pytest.raises(ValueError, match="at least 2"):
        energy_distance(x[:1], x)

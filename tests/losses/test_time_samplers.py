"""Time densities: card 05 check 1, and each sampler agrees with its own log_density (KS)."""

import math

import pytest
import torch

from flowforge.losses.time_samplers import (
    CosMapTime,
    LogitNormalTime,
    ModeTime,
    ShiftedTime,
    UniformTime,
    UShapedTime,
)

N = 1_000_000


def _draw(sampler, seed=0):
    return sampler(N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ks_against_density(sampler):
    """KS distance between the sample CDF and the CDF integrated from exp(log_density)."""
    t = _draw(sampler).sort().values
    grid = torch.linspace(1e-6, 1 - 1e-6, 20_001, dtype=torch.float64)
    dens = sampler.log_density(grid).exp()
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(dens, grid)])
    cdf = cdf / cdf[-1]
    emp = torch.searchsorted(t, grid).double() / N
    return (emp - cdf).abs().max().item()


@pytest.mark.parametrize(
    "sampler",
    [
        UniformTime(),
        LogitNormalTime(),
        LogitNormalTime(-0.5, 0.6),
        ModeTime(1.29),
        ModeTime(-0.5),
        CosMapTime(),
        UShapedTime(4.0),
        ShiftedTime(LogitNormalTime(), 3.0),
    ],
    ids=lambda s: type(s).__name__,
)
def test_samples_follow_log_density(sampler):
    # Card 05 asks KS < 0.003 at 1e6 draws; the KS 99.9% quantile at n = 1e6 is ~0.002.
    assert _ks_against_density(sampler) < 0.003


def test_logit_normal_card05():
    t = _draw(LogitNormalTime(0.0, 1.0))
    assert abs(t.median().item() - 0.5) < 0.002
    # Normal tail at logit(0.05) = -2.944: Phi(-2.944) = 0.00162.
    assert abs((t < 0.05).double().mean().item() - 0.0016) < 0.0005


def test_mode_zero_is_uniform_and_symmetric():
    t = _draw(ModeTime(0.0))
    edges = torch.linspace(0, 1, 11, dtype=torch.float64)
    hist = torch.histogram(t, edges).hist / N
    assert (hist - 0.1).abs().max() < 0.002
    grid = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    m = ModeTime(1.29)
    torch.testing.assert_close(m.log_density(grid), m.log_density(1 - grid), atol=1e-8, rtol=0)


def test_u_shaped_mass_at_ends_and_range():
    t = _draw(UShapedTime(4.0))
    assert t.min() >= 1e-5 and t.max() <= 1 - 1e-5
    # P(t < 0.1) = 1/2 (1 - e^{-0.4 a}) ... closed form of the mirrored truncated exponential:
    a = 4.0
    lo = 0.5 * (math.expm1(0.1 * a) + math.exp(a) - math.exp(0.9 * a)) / math.expm1(a)
    assert abs((t < 0.1).double().mean().item() - lo) < 0.002


def test_invalid_arguments():
    with pytest.raises(ValueError, match="scale=0"):
        LogitNormalTime(0, 0)
    with pytest.raises(ValueError, match=r"scale=3.0 is outside"):
        ModeTime(3.0)
    with pytest.raises(ValueError, match="a=-1"):
        UShapedTime(-1)
    with pytest.raises(ValueError, match="shift=0"):
        ShiftedTime(UniformTime(), 0)

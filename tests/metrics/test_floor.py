import pytest
import torch

from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein


def target(n, generator=None):
    return torch.randn(n, 2, generator=generator) * 2 + 1


def mean_gap(a, b):
    return (a.mean(0) - b.mean(0)).norm()


def test_equals_manual_computation():
    # Reference equality: two fresh draws per repeat, in order, from the same generator.
    g = torch.Generator().manual_seed(3)
    manual = []
    for _ in range(3):
        a, b = target(500, g), target(500, g)
        manual.append(mean_gap(a, b).item())
    got = finite_sample_floor(mean_gap, target, 500, 3, torch.Generator().manual_seed(3))
    assert got.item() == sorted(manual)[1]


def test_even_repeats_average_middle_values_and_tuple_samplers():
    def labelled(n, generator=None):
        return target(n, generator), torch.zeros(n, dtype=torch.long)

    g = torch.Generator().manual_seed(0)
    manual = sorted(mean_gap(target(100, g), target(100, g)).item() for _ in range(4))
    got = finite_sample_floor(mean_gap, labelled, 100, 4, torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx((manual[1] + manual[2]) / 2, rel=1e-12)


def test_sliced_floor_shrinks_like_one_over_n():
    # For two independent n-samples of the same law E[SW2^2] ~ C / n (up to log factors), so a
    # 16x larger n shrinks the squared floor about 16x (measured 18.7); threshold at half.
    def metric(a, b):
        return sliced_wasserstein(
            a, b, 64, generator=torch.Generator().manual_seed(0), squared=True
        )

    g = torch.Generator().manual_seed(0)
    small = finite_sample_floor(metric, target, 256, 5, g)
    large = finite_sample_floor(metric, target, 4096, 5, g)
    assert small / large > 8


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n=0"):
        finite_sample_floor(mean_gap, target, 0)
    with pytest.raises(ValueError, match="repeats=0"):
        finite_sample_floor(mean_gap, target, 10, repeats=0)

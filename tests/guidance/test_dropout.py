import math

import pytest
import torch

from flowforge.guidance.dropout import drop_condition


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_fraction_matches_p(p):
    n = 20000
    cond = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
    out = drop_condition(cond, p, null_value=10, generator=torch.Generator().manual_seed(2))
    dropped = out == 10
    frac = dropped.double().mean().item()
    # binomial: 5 standard deviations of the empirical fraction (false-failure odds ~ 6e-7)
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    # kept examples are untouched
    assert torch.equal(out[~dropped], cond[~dropped])


def test_p_zero_and_one():
    cond = torch.arange(100)
    assert torch.equal(drop_condition(cond, 0.0, null_value=-1), cond)
    assert (drop_condition(cond, 1.0, null_value=-1) == -1).all()


def test_deterministic_under_generator():
    cond = torch.arange(1000)
    a = drop_condition(cond, 0.3, 1000, generator=torch.Generator().manual_seed(7))
    b = drop_condition(cond, 0.3, 1000, generator=torch.Generator().manual_seed(7))
    c = drop_condition(cond, 0.3, 1000, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_tensor_null_drops_whole_examples():
    cond = torch.randn(500, 3)
    null = torch.zeros(3)
    out = drop_condition(cond, 0.5, null, generator=torch.Generator().manual_seed(0))
    dropped = (out == 0).all(dim=1)
    assert torch.equal(out[~dropped], cond[~dropped])
    assert 0 < dropped.sum() < 500
    # an example is either wholly dropped or wholly kept
    assert ((out == 0).any(dim=1) == dropped).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="p=1.5"):
        drop_condition(torch.arange(3), 1.5, 0)
    with pytest.raises(ValueError, match="does not broadcast"):
        drop_condition(torch.randn(4, 3), 0.5, torch.zeros(2))


def test_condition_dropout_objective_passes_dropped_labels_and_noise_stream():
    from flowforge.guidance.dropout import ConditionDropout

    seen = []

    def loss(model, x_1, cond, generator):
        seen.append((cond, generator))
        return x_1.sum(1)

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 8
    out = ConditionDropout(loss, p=0.25, null_value=8)(None, torch.ones(2000, 2), labels, g)
    cond, gen = seen[0]
    assert gen is g and out.shape == (2000,)
    dropped = (cond == 8).double().mean().item()
    assert abs(dropped - 0.25) < 5 * (0.25 * 0.75 / 2000) ** 0.5  # binomial, 5 sigma
    kept = cond != 8
    assert torch.equal(cond[kept], labels[kept])
    with pytest.raises(ValueError, match="p=1.5"):
        ConditionDropout(loss, p=1.5, null_value=8)

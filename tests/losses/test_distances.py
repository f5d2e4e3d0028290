"""Regression distances: closed forms."""

import math

import pytest
import torch

from flowforge.losses.distances import mse, pseudo_huber


def test_pseudo_huber_limits():
    x = torch.randn(4, 10)
    d = 10
    # c -> 0 gives ||e|| / d; tiny errors give ||e||^2 / (2 c d).
    torch.testing.assert_close(pseudo_huber(x, 0 * x, c=0.0), x.norm(dim=1) / d)
    small = 1e-4 * x
    c = 1.0
    torch.testing.assert_close(
        pseudo_huber(small, 0 * x, c=c), small.square().sum(1) / (2 * c * d), rtol=1e-6, atol=0
    )
    default = pseudo_huber(x, 0 * x)
    c0 = 0.00054 * d
    torch.testing.assert_close(default, ((x.square().sum(1) + c0**2).sqrt() - c0) / d)


def test_mse_and_errors():
    assert mse(torch.full((2, 3), 2.0), torch.zeros(2, 3)).tolist() == [4.0, 4.0]
    with pytest.raises(ValueError, match="c=-1"):
        pseudo_huber(torch.zeros(1, 2), torch.zeros(1, 2), c=-1.0)
    with pytest.raises(ValueError):
        pseudo_huber(torch.zeros(1, 2), torch.zeros(1, 2), c=math.inf)

"""EDM / PFGM++ denoising loss: closed-form expectations, gradients, reproducibility."""

import math

import pytest
import torch

from flowforge.losses.edm import EDMLoss
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.edm import EDMPrecond
from flowforge.paths.pfgmpp import PFGMPPKernel

SD = 0.5


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ideal_gaussian_denoiser_has_unit_loss():
    """Data N(0, sd^2 I), Gaussian kernel: E||D* - x||^2 / dim = sd^2 sigma^2 / (sd^2 + sigma^2),
    so lambda(sigma) times it is exactly 1 at every sigma (EDM's loss weighting). Per-example
    losses are chi^2_4 / 4 with variance 1/2, so the mean of 50k has standard error 0.003."""
    x_1 = SD * torch.randn(50_000, 4, generator=gen(1))

    def ideal(y, sigma, cond=None):
        return (SD**2 / (SD**2 + sigma**2))[:, None] * y

    loss = EDMLoss(sigma_data=SD)(ideal, x_1, generator=gen(2))
    assert loss.shape == (50_000,)
    assert abs(loss.mean().item() - 1) < 0.02


@pytest.mark.parametrize("D", [8.0, math.inf])
def test_identity_denoiser_measures_the_kernel_second_moment(D):
    """With D(y) = y and sigma fixed at 1 (p_std = 0): loss = lambda(1) ||y - x||^2 / N, whose
    mean is lambda(1) D / (D - 2) (Student-t variance; 1 for D = inf), lambda(1) = 5."""
    x_1 = torch.randn(100_000, 4, generator=gen(1))
    loss_fn = EDMLoss(kernel=PFGMPPKernel(D), p_mean=0.0, p_std=0.0, sigma_data=SD)
    loss = loss_fn(lambda y, sigma, cond=None: y, x_1, generator=gen(2))
    expected = (1 + SD**2) / SD**2 * (1.0 if math.isinf(D) else D / (D - 2))
    assert abs(loss.mean().item() / expected - 1) < 0.02


def test_sigma_is_log_normal():
    seen = {}

    def record(y, sigma, cond=None):
        seen["sigma"] = sigma
        return y

    EDMLoss(p_mean=-1.2, p_std=1.2)(record, torch.zeros(20_000, 2), generator=gen())
    log_sigma = seen["sigma"].log()
    assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03


def test_gradients_reach_every_parameter_and_generator_reproduces():
    net = MLPField(MLPConfig(dim=2, hidden=16, depth=2, num_classes=3))
    denoiser = EDMPrecond(net, SD)
    x_1, cond = torch.randn(64, 2), torch.randint(0, 3, (64,))
    loss_fn = EDMLoss(kernel=PFGMPPKernel(16.0))
    loss = loss_fn(denoiser, x_1, cond, generator=gen(5))
    assert torch.equal(loss, loss_fn(denoiser, x_1, cond, generator=gen(5)))
    loss.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="p_std"):
        EDMLoss(p_std=-1.0)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMLoss(sigma_data=0.0)
    with pytest.raises(ValueError, match="cond"):
        EDMLoss()(lambda y, s, c=None: y, torch.zeros(4, 2), cond=torch.zeros(3))

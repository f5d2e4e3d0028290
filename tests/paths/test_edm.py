"""EDM conventions: preconditioning, and the denoiser <-> straight-path velocity conversions."""

import math

import pytest
import torch

from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.affine import CondOTPath
from flowforge.paths.edm import (
    DenoiserAsVelocity,
    EDMPrecond,
    VelocityAsDenoiser,
    sigma_from_t,
    t_from_sigma,
)

S = 0.7  # std of the Gaussian data N(0, S^2 I) used for closed forms


def gaussian_denoiser(x, sigma, cond=None):
    """E[x_1 | x_1 + sigma n] for x_1 ~ N(0, S^2 I)."""
    return (S**2 / (S**2 + sigma**2))[:, None] * x


def test_sigma_t_roundtrip_and_edm_sample():
    t = torch.rand(64) * 0.98 + 0.01
    assert torch.allclose(t_from_sigma(sigma_from_t(t)), t, atol=1e-12)
    # x_t / t is an EDM sample x_1 + sigma x_0 at sigma = (1 - t) / t.
    x_0, x_1 = torch.randn(64, 3), torch.randn(64, 3)
    x_t = CondOTPath().sample(x_0, x_1, t).x_t
    assert torch.allclose(x_t / t[:, None], x_1 + sigma_from_t(t)[:, None] * x_0, atol=1e-10)


def test_precond_coefficients_closed_form_and_limits():
    D = EDMPrecond(lambda x, t, cond=None: x, sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = D.coefficients(torch.tensor([0.5, 1e-9, 1e6]))
    # sigma = sigma_data: c_skip = 1/2, c_out = sd / sqrt 2, c_in = 1 / (sd sqrt 2).
    assert torch.allclose(c_skip[0], torch.tensor(0.5))
    assert torch.allclose(c_out[0], torch.tensor(0.5 / math.sqrt(2)))
    assert torch.allclose(c_in[0], torch.tensor(1 / (0.5 * math.sqrt(2))))
    assert torch.allclose(c_noise, torch.tensor([0.5, 1e-9, 1e6]).log() / 4)
    # sigma -> 0: the denoiser is the identity (c_skip -> 1, c_out -> 0).
    assert abs(c_skip[1] - 1) < 1e-15 and c_out[1] < 1e-8
    # sigma -> inf: D -> sd F(x / sigma) (c_skip -> 0, c_out -> sd, c_in sigma -> 1).
    assert c_skip[2] < 1e-12 and abs(c_out[2] - 0.5) < 1e-9 and abs(c_in[2] * 1e6 - 1) < 1e-9


def test_precond_sigma_zero_is_identity_with_finite_gradients():
    net = MLPField(MLPConfig(dim=3, hidden=16, depth=2))
    D = EDMPrecond(net)
    x = torch.randn(4, 3)
    out = D(x, torch.tensor([0.0, 0.0, 1.0, 2.0]))
    assert torch.equal(out[:2], x[:2])
    out.square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every parameter is reached


def test_precond_ideal_denoiser_for_a_single_point_is_exact():
    """Data = one point c: D* = c. Its raw network F* = (c - c_skip y) / c_out, written in the
    inputs F actually receives (c_in y, c_noise), must reproduce c through the wrapper."""
    sd, c = 0.5, torch.tensor([0.3, -1.2])

    def ideal_F(z, c_noise, cond=None):
        sigma = (4 * c_noise).exp()[:, None]  # c_noise = ln(sigma) / 4
        y = z * (sigma**2 + sd**2).sqrt()  # z = c_in y
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
        return (c - c_skip * y) / c_out

    sigma = torch.exp(torch.empty(256).uniform_(math.log(0.002), math.log(80)))
    y = c + sigma[:, None] * torch.randn(256, 2)
    assert torch.allclose(EDMPrecond(ideal_F, sd)(y, sigma), c.expand(256, 2), atol=1e-9)


def test_denoiser_as_velocity_equals_exact_gaussian_flow_velocity():
    path = CondOTPath()
    t = torch.rand(128) * 0.9 + 0.05
    x_t = torch.randn(128, 2) * 2
    v = DenoiserAsVelocity(gaussian_denoiser)(x_t, t)
    # Reference 1: the path's own conversion of the posterior mean x_1_hat = E[x_1 | x_t].
    var_t = t**2 * S**2 + (1 - t) ** 2
    x1_hat = (t * S**2 / var_t)[:, None] * x_t
    assert torch.allclose(v, path.convert(x1_hat, x_t, t, "x1", "velocity"), atol=1e-10)
    # Reference 2: the marginal velocity of x_t ~ N(0, var_t I), d/dt log sqrt(var_t) x_t.
    v_exact = ((t * S**2 - (1 - t)) / var_t)[:, None] * x_t
    assert torch.allclose(v, v_exact, atol=1e-10)


def test_denoiser_as_velocity_single_point_and_clipped_ends():
    c = torch.tensor([1.0, -2.0])
    v = DenoiserAsVelocity(lambda x, sigma, cond=None: c.expand_as(x), sigma_max=80.0)
    x_t, t = torch.randn(3, 2), torch.tensor([0.0, 0.5, 1.0])
    out = v(x_t, t)
    assert torch.isfinite(out).all()
    # Exact velocity towards one point: (c - x_t) / (1 - t), at t clipped to [1/81, 1/1.002].
    t_c = t.clamp(1 / 81, 1 / 1.002)
    assert torch.allclose(out, (c - x_t) / (1 - t_c)[:, None], atol=1e-12)


def test_velocity_as_denoiser_inverts_denoiser_as_velocity():
    sigma = torch.exp(torch.empty(64).uniform_(math.log(0.01), math.log(50)))
    x = torch.randn(64, 2) * (S**2 + sigma[:, None] ** 2).sqrt()
    round_trip = VelocityAsDenoiser(DenoiserAsVelocity(gaussian_denoiser))
    assert torch.allclose(round_trip(x, sigma), gaussian_denoiser(x, sigma), atol=1e-10)
    # sigma = 0 is the identity.
    assert torch.equal(VelocityAsDenoiser(lambda x, t, cond=None: x)(x, 0.0), x)


def test_precond_passes_c_noise_and_cond_to_the_network():
    seen = {}

    def net(x, t, cond=None):
        seen["t"], seen["cond"] = t, cond
        return torch.zeros_like(x)

    labels = torch.tensor([1, 2])
    EDMPrecond(net)(torch.ones(2, 2), torch.tensor([1.0, math.e**4]), labels)
    assert torch.allclose(seen["t"], torch.tensor([0.0, 1.0])) and seen["cond"] is labels


def test_precond_keeps_the_skip_path_in_float32_for_half_inputs():
    seen = {}

    def net(x, t, cond=None):
        seen["dtype"] = x.dtype
        return torch.zeros_like(x)

    out = EDMPrecond(net)(torch.ones(2, 2, dtype=torch.bfloat16), 0.5)
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.float32
    assert torch.equal(out, torch.full((2, 2), 0.5, dtype=torch.float32))  # c_skip = 1/2


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(lambda x, t, cond=None: x, sigma_data=0.0)
    with pytest.raises(ValueError, match="sigma has shape"):
        EDMPrecond(lambda x, t, cond=None: x)(torch.ones(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="sigma_min"):
        DenoiserAsVelocity(gaussian_denoiser, sigma_min=1.0, sigma_max=0.5)

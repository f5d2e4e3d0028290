"""Log-likelihoods: Gaussian-to-Gaussian closed forms, Hutchinson's unbiasedness, gradients."""

import math

import pytest
import torch
from torch import nn

from flowforge.solvers.likelihood import (
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
    sample_with_log_prob,
    standard_normal_log_prob,
)

MU, S = [1.0, -2.0], [0.5, 2.0]


class GaussianFlow(nn.Module):
    """The exact CondOT marginal velocity from N(0, I) to N(mu, diag(s^2)), independent coupling.

    x_t ~ N(t mu, diag(std_t^2)) with std_t^2 = (1 - t)^2 + t^2 s^2, and the flow is the affine
    map x_t = t mu + std_t x_0, so v(x, t) = mu + (d std_t / dt) / std_t (x - t mu).
    """

    def __init__(self, mu, s):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu))
        self.log_s = nn.Parameter(torch.tensor(s).log())

    def forward(self, x, t, cond=None):
        s2, t = (2 * self.log_s).exp(), t[:, None]
        var = (1 - t) ** 2 + t**2 * s2
        std_dstd = -(1 - t) + t * s2  # std_t d std_t / dt
        return self.mu + std_dstd / var * (x - t * self.mu)


def gaussian_log_prob(x, mu, s):
    mu, s = torch.as_tensor(mu), torch.as_tensor(s)
    return (-0.5 * ((x - mu) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(1)


def mlp_field(D=3, seed=1):
    """A smooth field with a dense Jacobian (Rademacher probes are not exact on it)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(D + 1, 16), nn.Tanh(), nn.Linear(16, D))
    return lambda x, t, cond=None: net(torch.cat([x, t[:, None]], 1))


def grid(n, backward=False):
    g = torch.linspace(0, 1, n + 1)
    return g.flip(0) if backward else g


def test_standard_normal_log_prob_matches_torch():
    x = torch.randn(5, 2, 3)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(x), ref)


def test_exact_divergence_equals_jacobian_trace():
    field = mlp_field()
    x, t = torch.randn(4, 3, requires_grad=True), torch.rand(4)
    div = exact_divergence(field(x, t), x)
    traces = [
        torch.autograd.functional.jacobian(
            lambda y, b=b: field(y[None], t[b : b + 1])[0], x[b]
        ).trace()
        for b in range(4)
    ]
    torch.testing.assert_close(div, torch.stack(traces))


@pytest.mark.parametrize("method, time_grid", [("rk4", grid(50, True)), ("dopri5", None)])
def test_log_likelihood_of_gaussian_flow_is_exact(method, time_grid):
    x_1 = torch.tensor(MU) + torch.tensor(S) * torch.randn(64, 2)
    log_p1, x_0 = log_likelihood(
        GaussianFlow(MU, S),
        x_1,
        time_grid=time_grid,
        method=method,
        atol=1e-9,
        rtol=1e-9,
        return_x0=True,
    )
    # Measured max errors: 1.9e-8 (rk4, 50 steps) and 1.2e-8 (dopri5 at tolerance 1e-9).
    torch.testing.assert_close(log_p1, gaussian_log_prob(x_1, MU, S), atol=1e-6, rtol=0)
    torch.testing.assert_close(x_0, (x_1 - torch.tensor(MU)) / torch.tensor(S), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method, time_grid", [("rk4", grid(50)), ("dopri5", None)])
def test_sample_with_log_prob_of_gaussian_flow_is_exact(method, time_grid):
    x_0 = torch.randn(64, 2)
    x_1, log_p1 = sample_with_log_prob(
        GaussianFlow(MU, S), x_0, time_grid=time_grid, method=method, atol=1e-9, rtol=1e-9
    )
    torch.testing.assert_close(x_1, torch.tensor(MU) + torch.tensor(S) * x_0, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_p1, gaussian_log_prob(x_1, MU, S), atol=1e-6, rtol=0)


def test_linear_field_on_image_shaped_input():
    # v = A x on (B, 2, 2) flattened: x_1 = e^A x_0 and log p_1(x_1) = log p_0(e^-A x_1) - tr A.
    A = 0.5 * torch.randn(4, 4)
    field = lambda x, t, cond=None: (x.flatten(1) @ A.T).reshape(x.shape)  # noqa: E731
    x_1 = torch.randn(6, 2, 2)
    log_p1 = log_likelihood(field, x_1, time_grid=grid(40, True), method="rk4")
    x_0 = (x_1.flatten(1) @ torch.linalg.matrix_exp(-A).T).reshape(x_1.shape)
    torch.testing.assert_close(
        log_p1, standard_normal_log_prob(x_0) - A.trace(), atol=1e-6, rtol=0
    )


def test_translation_by_cond_keeps_density_shape():
    cond = torch.randn(5, 2)  # v = cond, so x_1 = x_0 + cond and div v = 0
    x_1 = torch.randn(5, 2)
    log_p1 = log_likelihood(
        lambda x, t, c: c, x_1, cond=cond, time_grid=grid(2, True), method="euler"
    )
    torch.testing.assert_close(log_p1, standard_normal_log_prob(x_1 - cond))


def test_sample_then_likelihood_round_trip():
    field, x_0 = mlp_field(), torch.randn(16, 3)
    x_1, log_p1 = sample_with_log_prob(field, x_0, time_grid=grid(32), method="rk4")
    log_p1_back, x_0_back = log_likelihood(
        field, x_1, time_grid=grid(32, True), method="rk4", return_x0=True
    )
    # RK4 there and back on h = 1/32: measured differences 3e-13 (x) and 8e-13 (log p).
    torch.testing.assert_close(x_0_back, x_0, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_p1_back, log_p1, atol=1e-10, rtol=0)


def test_rademacher_probes_are_exact_for_diagonal_jacobians():
    x_1 = torch.randn(8, 2)
    kwargs = dict(time_grid=grid(10, True), method="rk4")
    exact = log_likelihood(GaussianFlow(MU, S), x_1, **kwargs)
    hutch = log_likelihood(GaussianFlow(MU, S), x_1, divergence="hutchinson", **kwargs)
    torch.testing.assert_close(hutch, exact)  # eps^T diag(d) eps = sum d_i when eps_i^2 = 1


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    field, n = mlp_field(), 200
    x_1 = torch.randn(3, 3)
    kwargs = dict(time_grid=grid(8, True), method="rk4")
    exact = log_likelihood(field, x_1, **kwargs)  # (3,)
    g = torch.Generator().manual_seed(0)
    reps = x_1.repeat_interleave(n, 0)  # each copy gets its own probe: n independent estimates
    stds = []
    for n_probes in [1, 4]:
        est = log_likelihood(
            field,
            reps,
            divergence="hutchinson",
            probe=probe,
            n_probes=n_probes,
            generator=g,
            **kwargs,
        ).reshape(3, n)
        mean, std = est.mean(1), est.std(1)
        assert (std > 0).all()  # the Jacobian is dense, so single estimates do vary
        assert ((mean - exact).abs() < 4 * std / math.sqrt(n)).all(), (mean - exact, std)
        stds.append(std)
    # Averaging K probes divides the variance by K, so the std ratio is 1/2 in expectation
    # (measured 0.51 rademacher, 0.47 gaussian; |z| of the means at most 1.74).
    ratio = (stds[1] / stds[0]).mean().item()
    assert 0.35 < ratio < 0.65, ratio


def test_gradient_matches_analytic():
    flow = GaussianFlow(MU, S)
    x_1 = torch.tensor(MU) + torch.tensor(S) * torch.randn(32, 2)
    log_likelihood(flow, x_1, time_grid=grid(50, True), method="rk4").mean().backward()
    mu, s = torch.tensor(MU), torch.tensor(S)
    # d/d mu log N = (x - mu) / s^2;  d/d log s log N = (x - mu)^2 / s^2 - 1.
    torch.testing.assert_close(flow.mu.grad, ((x_1 - mu) / s**2).mean(0), atol=1e-6, rtol=0)
    grad_log_s = (((x_1 - mu) / s) ** 2 - 1).mean(0)
    torch.testing.assert_close(flow.log_s.grad, grad_log_s, atol=1e-6, rtol=0)


def test_gradient_in_data_is_the_score():
    x_1 = torch.randn(8, 2, requires_grad=True)
    log_p1 = log_likelihood(GaussianFlow(MU, S), x_1, time_grid=grid(50, True), method="rk4")
    (score,) = torch.autograd.grad(log_p1.sum(), x_1)
    mu, s = torch.tensor(MU), torch.tensor(S)
    torch.testing.assert_close(score, -(x_1.detach() - mu) / s**2, atol=1e-6, rtol=0)


def test_sample_with_log_prob_gradient_matches_analytic():
    flow = GaussianFlow(MU, S)
    x_0 = torch.randn(32, 2)
    _, log_p1 = sample_with_log_prob(flow, x_0, time_grid=grid(50), method="rk4")
    log_p1.mean().backward()
    # log p_1(mu + s x_0) = log N(x_0) - sum log s: zero gradient in mu, -1 in each log s.
    torch.testing.assert_close(flow.mu.grad, torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.log_s.grad, -torch.ones(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_no_grad_gives_same_value_without_graph(divergence):
    flow, x_1 = GaussianFlow(MU, S), torch.randn(8, 2)
    kwargs = dict(time_grid=grid(10, True), method="heun", divergence=divergence)
    with_grad = log_likelihood(flow, x_1, generator=torch.Generator().manual_seed(0), **kwargs)
    with torch.no_grad():
        without = log_likelihood(flow, x_1, generator=torch.Generator().manual_seed(0), **kwargs)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach())


def test_hutchinson_divergence_matches_probe_formula():
    x = torch.randn(4, 3, requires_grad=True)
    W = torch.randn(3, 3)
    probes = torch.randn(5, 4, 3)
    est = hutchinson_divergence(x @ W.T, x, probes)
    expected = torch.einsum("kbi,ij,kbj->b", probes, W, probes) / 5  # eps^T W eps averaged
    torch.testing.assert_close(est, expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(time_grid=grid(4)), "flip"),
        (dict(method="rk4"), "time_grid=None"),
        (dict(divergence="hutch"), "divergence='hutch'"),
        (dict(probe="normal"), "probe='normal'"),
        (dict(divergence="hutchinson", n_probes=0), "n_probes=0"),
        (dict(log_p0=lambda x: x), "log_p0 returned shape"),
        (dict(method="rk5"), "method='rk5'"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_likelihood(GaussianFlow(MU, S), torch.randn(3, 2), **kwargs)


def test_sample_with_log_prob_rejects_decreasing_grid():
    with pytest.raises(ValueError, match="flip"):
        sample_with_log_prob(GaussianFlow(MU, S), torch.randn(3, 2), time_grid=grid(4, True))

"""FlowTurbo (card 09): pseudo-corrector order and cost, NFE accounting, refiner objective."""

import pytest
import torch
from scipy.linalg import expm

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.flowturbo import (
    ConcatRefiner,
    MLPRefiner,
    MLPRefinerConfig,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
    parse_schedule,
    pseudo_corrector_step,
)
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.solvers.counting import CountingField
from flowforge.solvers.ode import sample_euler, sample_heun

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)  # rotation with decay


def linear(x, t, cond=None):
    return x @ A.T  # dx/dt = A x, x(1) = expm(A) x(0)


def time_linear(x, t, cond=None):
    return -(1 + t[:, None]) * x  # t-dependent, so a wrong time at any call changes the result


class CountingRefiner(torch.nn.Module):
    """Counts refiner calls; r = 0 ("reuse the last velocity") or r = v(x, t) - v (exact)."""

    def __init__(self, field=None):
        super().__init__()
        self.field, self.nfe = field, 0

    def forward(self, x, t, v, cond=None):
        self.nfe += 1
        return torch.zeros_like(x) if self.field is None else self.field(x, t, cond) - v


def _x0():
    return torch.tensor([[1.0, 0.5], [-0.3, 1.2]], dtype=torch.float64)


def _endpoint_errors(sampler, steps):
    x_0 = _x0()
    exact = x_0 @ torch.from_numpy(expm(A.numpy())).T
    return [(sampler(x_0, K) - exact).norm().item() for K in steps]


@pytest.mark.parametrize(
    "name, low, high",
    [("pseudo", 3.5, 4.5), ("heun", 3.5, 4.5), ("euler", 1.8, 2.2)],
)
def test_pseudo_corrector_second_order(name, low, high):
    # Card check 1: halving dt divides the endpoint error by 3.5-4.5 (order 2), Euler by ~2.
    # Measured P: 4.03, 3.99, 3.99; Heun: 4.08, 4.04, 4.02; Euler: 2.16, 2.08, 2.04.
    samplers = {
        "pseudo": lambda x_0, K: flowturbo_sample(linear, None, x_0, (0, K, 0)),
        "heun": lambda x_0, K: sample_heun(linear, x_0, torch.linspace(0, 1, K + 1)),
        "euler": lambda x_0, K: sample_euler(linear, x_0, torch.linspace(0, 1, K + 1)),
    }
    errors = _endpoint_errors(samplers[name], [8, 16, 32, 64])
    ratios = [a / b for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert all(low <= r <= high for r in ratios), ratios


def test_pseudo_corrector_costs_one_nfe_per_step():
    # Card check 1: a P step costs 1 predictor NFE (the first one pays 1 more: no cache yet).
    counts = {}
    for K in (8, 16):
        field = CountingField(linear)
        flowturbo_sample(field, None, _x0(), (0, K, 0))
        counts[K] = field.nfe
    assert counts[8] == 9 and (counts[16] - counts[8]) / 8 == 1


def test_pseudo_corrector_caches_velocity_at_predicted_point():
    # The cache is d' = v(x~) with x~ = x_i + h d_i (pitfall), not v(x_{i+1}).
    x, h = _x0(), torch.tensor(0.25)
    x_1, d = pseudo_corrector_step(linear, x, torch.tensor(0.0), h)
    x_pred = x + h * linear(x, None)
    torch.testing.assert_close(d, linear(x_pred, None))
    assert (d - linear(x_1, None)).norm() > 1e-3  # the two really differ here


@pytest.mark.parametrize(
    "schedule", ["H2P6R4", "H1P5R3", (0, 4, 2), (0, 0, 3), (3, 0, 2), (2, 3, 0)]
)
def test_nfe_accounting(schedule):
    # Counted calls equal flowturbo_nfe: H hands its end-point velocity to the first P step.
    predictor, refiner = CountingField(time_linear), CountingRefiner()
    flowturbo_sample(predictor, refiner, _x0(), schedule)
    nfe = flowturbo_nfe(schedule)
    assert (predictor.nfe, refiner.nfe) == (nfe.predictor, nfe.refiner)


def test_card_schedule_costs():
    # Card: H2P6R4 uses 10 predictor NFE (12-step Heun: 24); H1P5R3 7 predictor + 6 refiner.
    assert flowturbo_nfe("H2P6R4") == (10, 8)
    assert flowturbo_nfe((1, 5, 3)) == (7, 6)


def test_heun_schedule_equals_sample_heun():
    x_0 = torch.randn(5, 2)
    x = flowturbo_sample(time_linear, None, x_0, (6, 0, 0))
    torch.testing.assert_close(x, sample_heun(time_linear, x_0, torch.linspace(0, 1, 7)))


def test_exact_refiner_reproduces_heun_and_zero_loss():
    # r(x, t, v) = v(x, t) - v is the exact velocity change: refiner steps are then exactly
    # Heun steps on the predictor, and the objective is 0 (checks every time argument).
    x_0 = torch.randn(5, 2)
    exact = CountingRefiner(time_linear)
    x = flowturbo_sample(time_linear, exact, x_0, (0, 0, 6))
    torch.testing.assert_close(x, sample_heun(time_linear, x_0, torch.linspace(0, 1, 7)))
    g = torch.Generator().manual_seed(0)
    loss = RefinerLoss(time_linear)
    assert loss(exact, torch.randn(16, 2), generator=g).abs().max() < 1e-12
    assert loss(CountingRefiner(), torch.randn(16, 2), generator=g).min() > 0


def test_schedule_errors():
    assert parse_schedule("h2p6r4") == (2, 6, 4)
    for bad in ("H2P6", "2,6,4", (1, 2), (0, 0, 0), (-1, 2, 3)):
        with pytest.raises(ValueError, match="schedule"):
            parse_schedule(bad)
    with pytest.raises(ValueError, match="refiner=None"):
        flowturbo_sample(linear, None, _x0(), "H1P1R1")


def _relative_change_error(refiner, teacher, n=4096, seed=123):
    """sqrt(sum ||r - dv||^2 / sum ||dv||^2) over fresh (x, t, Delta), dv the teacher's change."""
    g = torch.Generator().manual_seed(seed)
    x_1 = eight_gaussians(n, g)[0].double()
    x_0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    delta = 0.12 * torch.rand(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * (1 - delta)
    x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
    with torch.no_grad():
        v_t = teacher(x_t, t)
        x_plus = x_t + delta[:, None] * v_t
        dv = teacher(x_plus, t + delta) - v_t
        err = refiner(x_plus, t + delta, v_t) - dv
    return (err.square().sum() / dv.square().sum()).sqrt().item()


def test_refiner_learns_velocity_change(teacher_8g):
    # A 1 x 64 refiner, 400 steps. r = 0 ("reuse the last velocity") has relative error exactly
    # 1; measured 0.62 after these steps (0.27 after the benchmark's 5k), threshold 0.8.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    refiner = MLPRefiner(MLPRefinerConfig(dim=2, hidden=64, depth=1))
    assert _relative_change_error(refiner, teacher_8g) == pytest.approx(1.0)  # zero init
    loss_fn = RefinerLoss(teacher_8g)
    opt = torch.optim.Adam(refiner.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for _ in range(400):
        x_1 = eight_gaussians(256, g)[0].double()
        loss = loss_fn(refiner, x_1, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert _relative_change_error(refiner, teacher_8g) < 0.8


def test_image_refiner_runs_and_gets_gradients():
    torch.manual_seed(0)
    predictor = UNetField(UNetConfig(in_channels=1, base_channels=8, channel_mults=(1, 2)))
    net = UNetField(UNetConfig(in_channels=2, out_channels=1, base_channels=8, channel_mults=(1,)))
    with torch.no_grad():  # leave the zero initialisation so every parameter gets a gradient
        for p in [*predictor.parameters(), *net.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    predictor.requires_grad_(False)
    refiner = ConcatRefiner(net)
    x_1 = torch.randn(3, 1, 8, 8)
    loss = RefinerLoss(predictor)(refiner, x_1, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,)
    loss.mean().backward()
    grads = [p.grad for p in refiner.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)
    refiner.zero_grad()
    x = flowturbo_sample(predictor, refiner, torch.randn(2, 1, 8, 8), "H1P1R2")
    assert x.shape == (2, 1, 8, 8)
    x.square().mean().backward()  # the sampler is differentiable in the refiner's parameters
    assert net.conv_out.weight.grad.abs().sum() > 0

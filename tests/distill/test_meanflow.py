"""MeanFlow (card 06): target identity, stop-gradient, sampler, CFG, dispersion, learning."""

import functools
import math

import pytest
import torch
from torch.func import jvp

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.dispersive import capture_features, dispersive_infonce_l2
from flowforge.distill.meanflow import (
    MeanFlowGuidance,
    MeanFlowLoss,
    average_velocity,
    meanflow_guided_velocity,
    meanflow_sample,
    meanflow_target,
    meanflow_times,
)
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.models.unet import UNetConfig, UNetField


def _random_times(n, g, min_gap=0.0):
    a, b = torch.rand(n, generator=g) * 0.98, torch.rand(n, generator=g) * 0.98
    t, r = torch.minimum(a, b), torch.maximum(a, b)
    return t, torch.maximum(r, t + min_gap).clamp(max=0.99)


def test_target_identity_single_point():
    """Card check 1: all data at x*, v = (x* - x) / (1 - t) and the exact u(x, t, r) is the
    same; fed into the target formula it must return u to 1e-5."""
    g = torch.Generator().manual_seed(0)
    x_star = torch.randn(1, 3, generator=g)
    x, (t, r) = torch.randn(64, 3, generator=g), _random_times(64, g)

    def u_exact(x, t, r):
        return (x_star - x) / (1 - t[:, None])

    v = u_exact(x, t, t)
    u, u_tgt, dudt = meanflow_target(u_exact, x, t, r, v)
    assert (u_tgt - u).abs().max() < 1e-5
    assert dudt.abs().max() < 1e-5  # u is constant along the straight trajectories
    # The check can fail: the card's tangent mistake (v, 0, 1) breaks the identity.
    _, du_wrong = jvp(u_exact, (x, t, r), (v, torch.zeros_like(t), torch.ones_like(r)))
    wrong = v + (r - t)[:, None] * du_wrong
    assert (wrong - u).abs().max() > 0.1


def _gaussian_flow(mu, sigma):
    """Data N(mu, sigma^2 I): x_t = t mu + m(t) x_0, m(t) = sqrt(t^2 sigma^2 + (1 - t)^2)."""

    def m(t):
        return (t**2 * sigma**2 + (1 - t) ** 2).sqrt()[:, None]

    def u_exact(x, t, r):  # (x_r - x_t) / (r - t) with x_r = r mu + m(r) / m(t) (x_t - t mu)
        x_r = r[:, None] * mu + m(r) / m(t) * (x - t[:, None] * mu)
        return (x_r - x) / (r - t)[:, None]

    def v_exact(x, t):  # d/dt of the flow: mu + m'(t) / m(t) (x - t mu)
        dm = ((t * sigma**2 - (1 - t)) / m(t)[:, 0])[:, None]
        return mu + dm / m(t) * (x - t[:, None] * mu)

    return u_exact, v_exact


def test_target_identity_gaussian():
    """The identity holds for a u that varies along trajectories and with r (Gaussian data,
    closed-form flow map): the target equals u to 1e-5."""
    g = torch.Generator().manual_seed(1)
    mu, sigma = torch.tensor([[2.0, -1.0]]), 0.3
    u_exact, v_exact = _gaussian_flow(mu, sigma)
    x, (t, r) = torch.randn(64, 2, generator=g), _random_times(64, g, min_gap=0.05)
    u, u_tgt, dudt = meanflow_target(u_exact, x, t, r, v_exact(x, t))
    assert dudt.abs().max() > 0.1  # a non-trivial total derivative
    assert (u_tgt - u).abs().max() < 1e-5


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_sampler_exact_for_exact_average_velocity(n_steps):
    """With the exact u of Gaussian data every k-step sampler lands on x_1 = mu + sigma x_0."""
    mu, sigma = torch.tensor([[2.0, -1.0]]), 0.3
    u_exact, _ = _gaussian_flow(mu, sigma)

    def model(x, times, cond=None):  # "start_gap" inputs (t, r - t)
        t = times[:, 0]
        return u_exact(x, t, t + times[:, 1])

    x_0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    x_1 = meanflow_sample(model, x_0, n_steps=n_steps)
    torch.testing.assert_close(x_1, mu + sigma * x_0, rtol=0, atol=1e-10)


def test_time_inputs_and_sampler_grid():
    t, r = torch.tensor([0.25, 0.5]), torch.tensor([0.75, 0.5])
    assert meanflow_times(t, r).tolist() == [[0.25, 0.5], [0.5, 0.0]]
    assert meanflow_times(t, r, "start_end").tolist() == [[0.25, 0.75], [0.5, 0.5]]
    seen = []

    def model(x, times, cond=None):
        seen.append(times[0].tolist())
        return torch.zeros_like(x)

    meanflow_sample(model, torch.zeros(1, 1), time_grid=torch.tensor([0.0, 0.25, 1.0]))
    assert seen == [[0.0, 0.25], [0.25, 0.75]]  # one NFE per step, (t, r - t)
    with pytest.raises(ValueError, match="time_grid"):
        meanflow_sample(model, torch.zeros(1, 1), time_grid=torch.tensor([0.0, 1.0, 0.5]))


def test_time_sampler_ratio_and_order():
    loss = MeanFlowLoss(flow_map_ratio=0.25)
    t, r = loss.sample_times(1000, generator=torch.Generator().manual_seed(0))
    assert bool((t <= r).all())
    assert int((r != t).sum()) == 250  # the card's 25 % with r != t
    # logit-normal(+0.4, 1) in our time is the card's logit-normal(-0.4, 1) in its time
    u = torch.logit(torch.cat([t[750:], r[750:]]))
    assert abs(u.mean().item() - 0.4) < 0.15


def _mlp(**kw):
    torch.manual_seed(0)
    return MLPField(MLPConfig(dim=2, hidden=32, depth=2, n_times=2, **kw))


def test_stop_gradient_gradient_equality():
    """Card check 2's unit test: dL/dtheta equals the gradient with u_tgt precomputed as a
    constant tensor; without the stop-gradient it differs."""
    net = _mlp()
    x_1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(3)) * 3
    x_0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    loss = MeanFlowLoss(flow_map_ratio=0.5)
    loss(net, x_1, generator=torch.Generator().manual_seed(5), x_0=x_0).mean().backward()
    g_loss = [p.grad.clone() for p in net.parameters()]

    t, r = loss.sample_times(16, torch.Generator().manual_seed(5), dtype=x_1.dtype)
    x_t, v = t[:, None] * x_1 + (1 - t[:, None]) * x_0, x_1 - x_0

    def u_fn(x, t, r):
        return net(x, torch.stack([t, r - t], -1))

    def grads(detach):
        net.zero_grad()
        _, dudt = jvp(u_fn, (x_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
        u_tgt = v + (r - t)[:, None] * dudt
        u_tgt = u_tgt.detach() if detach else u_tgt
        err = (u_fn(x_t, t, r) - u_tgt).square().sum(1)
        (err / (err.detach() + 0.01)).mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(g_loss, grads(detach=True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    diff = sum((a - b).abs().sum() for a, b in zip(g_loss, grads(detach=False), strict=True))
    assert diff > 1e-3


def test_guided_velocity_formula():
    """v~ = omega v + (1 - omega - kappa) u(0) + kappa u(c); kappa = 0: u(0) + omega (v - u(0))."""

    def model(x, times, cond):  # u(x, t, t | c) = 10 c + t
        assert bool((times[:, 1] == 0).all())  # queried at r = t
        return (10 * cond[:, None] + times[:, :1]).expand_as(x).to(x.dtype)

    x, t, v = torch.zeros(3, 2), torch.tensor([0.1, 0.5, 0.9]), torch.ones(3, 2)
    c = torch.tensor([1, 2, 3])
    out = meanflow_guided_velocity(model, x, t, v, c, 0, omega=2.0, kappa=0.25)
    expect = 2.0 * v + (1 - 2.0 - 0.25) * t[:, None] + 0.25 * (10 * c[:, None] + t[:, None])
    torch.testing.assert_close(out, expect)
    out0 = meanflow_guided_velocity(model, x, t, v, c, 0, omega=3.0, kappa=0.0)
    torch.testing.assert_close(out0, t[:, None] + 3.0 * (v - t[:, None]))


def test_guidance_dropout_and_interval():
    """Class dropout 1 equals unguided training on the null class; an empty interval equals
    unguided training on the labels; the card's defaults change the loss."""
    net = _mlp(num_classes=4)
    x_1, c = torch.randn(32, 2) * 2, torch.randint(0, 4, (32,))
    x_0 = torch.randn(32, 2)

    def run(guidance, cond):
        loss = MeanFlowLoss(guidance=guidance, p=0.0)  # plain squared error: differences show
        return loss(net, x_1, cond, generator=torch.Generator().manual_seed(0), x_0=x_0)

    plain = run(None, c)
    all_dropped = run(MeanFlowGuidance(class_dropout=1.0), c)
    torch.testing.assert_close(all_dropped, run(None, torch.full_like(c, 4)))
    outside = run(MeanFlowGuidance(class_dropout=0.0, t_interval=(0.0, 0.0)), c)
    torch.testing.assert_close(outside, plain)
    guided = run(MeanFlowGuidance(class_dropout=0.0), c)
    assert (guided - plain).abs().max() > 1e-3


def test_dispersive_term_is_lambda_times_feature_loss():
    """loss_disp - loss_plain = lambda L_disp(H), H the hooked layer's output at (x_t, t, r)."""
    net = _mlp()
    x_1, x_0 = torch.randn(16, 2) * 2, torch.randn(16, 2)
    disp = functools.partial(dispersive_infonce_l2, tau=0.5)
    kw = dict(generator=torch.Generator().manual_seed(0), x_0=x_0)
    plain = MeanFlowLoss()(net, x_1, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    loss = MeanFlowLoss(dispersive=disp, dispersive_weight=0.3, feature_modules=("net.1",))
    with_disp = loss(net, x_1, **kw)
    t, r = loss.sample_times(16, torch.Generator().manual_seed(0), dtype=x_1.dtype)
    with capture_features(net, ["net.1"]) as feats:
        average_velocity(net, t[:, None] * x_1 + (1 - t[:, None]) * x_0, t, r)
        expect = 0.3 * disp(feats["net.1"])
    torch.testing.assert_close(with_disp - plain, expect.expand(16))
    with pytest.raises(ValueError, match="feature_modules"):
        MeanFlowLoss(dispersive=disp)
    with pytest.raises(ValueError, match="not a submodule"):
        MeanFlowLoss(dispersive=disp, feature_modules=("nope",))(net, x_1)


def _train(sample_data, steps, hidden, depth, lr, seed=0):
    """From-scratch MeanFlow run with the card's objective, raw time inputs (t, r - t)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = MLPConfig(dim=2, hidden=hidden, depth=depth, n_times=2, time_embed_dim=0)
    net = MLPField(cfg).float()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = MeanFlowLoss()
    for _ in range(steps):
        loss = loss_fn(net, sample_data(256, g), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net


def test_learns_gaussian_one_step_map():
    """Data N(mu, 0.3^2 I): the exact one-step map is x_1 = mu + 0.3 x_0. After 500 steps
    (2 x 64 MLP, lr 2e-3) the 1-NFE map error must be < 0.3 (measured 0.155; the
    data's own spread is 0.38, the identity map's error 2.4). The card's tangent mistake
    (v, 0, 1) gives 33 on the same run, so this also guards the JVP."""
    mu, f32 = torch.tensor([[2.0, -1.0]], dtype=torch.float32), torch.float32
    net = _train(
        lambda n, g: mu + 0.3 * torch.randn(n, 2, generator=g, dtype=f32), 500, 64, 2, 2e-3
    )
    x_0 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    with torch.no_grad():
        x_1 = meanflow_sample(net, x_0)
    err = (x_1 - (mu + 0.3 * x_0)).norm(dim=1).mean().item()
    assert err < 0.3, err


def test_learns_eight_gaussians_one_step():
    """400 steps on 8 gaussians (3 x 64 MLP): the 1-NFE sliced W2 must be < 1.0, i.e. under
    0.4 x the 1-Euler-step value of the FM teacher in tests/conftest.py (2.61);
    measured 0.52 (seed 0)."""
    net = _train(lambda n, g: eight_gaussians(n, generator=g)[0], 400, 64, 3, 1e-3)
    ge = torch.Generator().manual_seed(1)
    y, _ = eight_gaussians(4096, generator=ge)
    with torch.no_grad():
        x_1 = meanflow_sample(net, torch.randn(4096, 2, generator=ge, dtype=torch.float32))
    swd = sliced_wasserstein(x_1, y, generator=torch.Generator().manual_seed(2)).item()
    assert math.isfinite(swd) and swd < 1.0, swd


def test_image_shaped_smoke():
    """(B, C, H, W) data through a 2-time UNet, with guidance and a hooked dispersive layer:
    per-example finite losses and a gradient on every parameter."""
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), num_classes=3, time_embed_dim=16)
    cfg.n_times = 2
    net = UNetField(cfg)
    with torch.no_grad():  # leave the zero-initialised output layers, so every weight gets a grad
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    name = next(n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d))
    loss_fn = MeanFlowLoss(
        guidance=MeanFlowGuidance(),
        dispersive=dispersive_infonce_l2,
        dispersive_weight=0.1,
        feature_modules=(name,),
    )
    x_1, c = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    loss = loss_fn(net, x_1, c, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (4,) and bool(torch.isfinite(loss).all())
    loss.mean().backward()
    for n, p in net.named_parameters():
        if n.startswith("class_embed"):  # only the labels in the batch (and null) get grads
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    x = meanflow_sample(net, torch.randn(2, 1, 8, 8), n_steps=2, cond=torch.tensor([1, 2]))
    assert x.shape == (2, 1, 8, 8)

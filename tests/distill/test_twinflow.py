"""TwinFlow (card 08): endpoint inversion, the sign of Delta_v, RCGM target, detach rules,
sampler, a short learning check and an image-shaped smoke test."""

import pytest
import torch
from torch import nn

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.twinflow import TwinFlowLoss
from flowforge.distill.twinflow_sampling import (
    twin_delta,
    twin_endpoints,
    twinflow_sample,
    twinflow_time_grid,
)
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.solvers.ode import sample_euler


def point_field(points_real: torch.Tensor, points_fake: torch.Tensor):
    """Exact posterior-mean velocity of two equal-weight point sets, real for t >= 0, fake for
    t < 0: E[x_1 - x_0 | x_t] = (E[x_1 | x_t] - x_t) / (1 - |t|), with x_t | p ~ N(|t| p,
    (1 - |t|)^2 I). Ignores the target time (straight conditional paths make the jump t -> s
    of a single point equal to its velocity)."""

    def field(x, times, cond=None):
        t = times[:, 0]
        a = t.abs()[:, None, None]  # (B, 1, 1)
        out = torch.empty_like(x)
        for sign, pts in ((True, points_real), (False, points_fake)):
            rows = (t >= 0) == sign
            if rows.any():
                xr, ar = x[rows][:, None, :], a[rows]  # (b, 1, D), (b, 1, 1)
                logw = -(xr - ar * pts).square().sum(-1) / (2 * (1 - ar[..., 0]) ** 2)
                mean = (torch.softmax(logw, 1)[..., None] * pts).sum(1)  # (b, D)
                out[rows] = (mean - x[rows]) / (1 - a[rows, 0])
        return out

    return field


def test_endpoints_invert_with_abs_t():
    x_1, x_0 = torch.randn(6, 3), torch.randn(6, 3)
    t = torch.tensor([0.1, 0.5, 0.9, -0.1, -0.5, -0.9])
    a = t.abs()[:, None]
    x_t = a * x_1 + (1 - a) * x_0
    x1_hat, x0_hat = twin_endpoints(x_t, t, x_1 - x_0)
    torch.testing.assert_close(x1_hat, x_1)
    torch.testing.assert_close(x0_hat, x_0)


def test_delta_v_points_from_fake_mean_to_real_mean():
    # one point each: E_real[x_1 | x_t] = a, E_fake[x_1 | x_t] = b, so Delta_v = (a - b) / (1 - t)
    a, b = torch.tensor([[2.0, -1.0]]), torch.tensor([[-1.0, 3.0]])
    x_t, t = 3 * torch.randn(64, 2), torch.rand(64) * 0.95
    delta = twin_delta(point_field(a, b), x_t, t)
    torch.testing.assert_close(delta, (a - b).expand(64, 2) / (1 - t[:, None]))
    # two points each: Delta_v = (E_real - E_fake) / (1 - t) with the posterior means
    real = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    fake = torch.tensor([[-4.0, 0.0], [0.0, -4.0]])
    field = point_field(real, fake)
    delta = twin_delta(field, x_t, t)
    t_ = t[:, None]
    m_real = x_t + (1 - t_) * field(x_t, torch.stack([t, t], -1))  # posterior means
    m_fake = x_t + (1 - t_) * field(x_t, torch.stack([-t, -t], -1))
    torch.testing.assert_close(delta, (m_real - m_fake) / (1 - t_))
    # a step along Delta_v moves every fake posterior mean toward the real one (never away)
    moved = m_fake + 0.1 * (1 - t_) * delta
    assert ((moved - m_real).norm(dim=1) < (m_fake - m_real).norm(dim=1)).all()


def test_rcgm_target_is_fixed_point_of_exact_field_and_linear_in_error():
    a = torch.tensor([[1.5, -2.0]])
    field = point_field(a, a)
    loss = TwinFlowLoss(rcgm_order=2)
    x_0, t = torch.randn(32, 2), torch.rand(32) * 0.9
    s = t + torch.rand(32) * (1 - t)
    s[:8] = t[:8] + 0.004  # s - t < delta: the target reduces to flow matching
    x_t = t[:, None] * a + (1 - t[:, None]) * x_0
    u = a - x_0  # = (a - x_t) / (1 - t): straight paths to a single point
    exact = field(x_t, torch.stack([t, s], -1))
    torch.testing.assert_close(loss.rcgm_target(field, exact, x_t, u, t, s), exact)
    # an error e in the prediction comes back as -clip(a e): a = (s - t) / delta, or 1 if near
    err = 1e-3 * torch.randn(32, 2)
    target = loss.rcgm_target(field, exact + err, x_t, u, t, s)
    scale = torch.where(s - t < 0.01, torch.ones_like(t), (s - t) / 0.01)[:, None]
    torch.testing.assert_close(target, exact + err - (scale * err).clamp(-1, 1))


class SplitNet(nn.Module):
    """Two-time network whose one-step jump (all times (0, 1)) uses its own parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = nn.Linear(2, 2)
        self.flow = MLPField(MLPConfig(dim=2, hidden=16, n_times=2))

    def forward(self, x, times, cond=None):
        if bool((times[:, 0] == 0).all() and (times[:, 1] == 1).all()):
            return self.gen(x)
        return self.flow(x, times, cond)


def _grads(module: nn.Module) -> float:
    return sum(0.0 if p.grad is None else p.grad.abs().sum().item() for p in module.parameters())


def test_adv_detaches_fakes_rect_does_not_and_delta_has_no_grad():
    g = torch.Generator().manual_seed(0)
    x_1 = torch.randn(16, 2, generator=g)
    adv = SplitNet()
    TwinFlowLoss(0, 0, 1, 0, 0).terms(adv, x_1, generator=g)["adv"].sum().backward()
    assert _grads(adv.gen) == 0 and _grads(adv.flow) > 0  # x_fake detached in L_adv
    rect = SplitNet()
    TwinFlowLoss(0, 0, 0, 1, 0).terms(rect, x_1, generator=g)["rect"].sum().backward()
    assert _grads(rect.gen) > 0 and _grads(rect.flow) == 0  # Delta_v under no_grad
    # gradient of L_rect with respect to the one-step prediction is -2 Delta_v / D
    const = lambda x, tt, c=None: torch.where(tt[:, :1] >= 0, 0.3, -0.2).expand_as(x)  # noqa: E731
    pred = torch.randn(16, 2, requires_grad=True)
    loss = TwinFlowLoss().rectify(const, pred, x_1 + pred, generator=g)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    torch.testing.assert_close(grad, torch.full_like(pred, -2 * 0.5 / 2))
    assert not twin_delta(const, x_1, torch.rand(16)).requires_grad


def test_enhanced_target_adds_guidance_difference():
    w = 0.5
    net = lambda x, tt, c=None: torch.full_like(x, 0.0 if c is None else 1.0)  # noqa: E731
    x_1, cond = torch.randn(8, 2), torch.arange(8) % 3
    loss = TwinFlowLoss(0, 1, 0, 0, 0, ema_decay=0, enhance_ratio=w)
    got = loss.terms(net, x_1, cond, generator=torch.Generator().manual_seed(3))["real"]
    x_0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    u = x_1 - x_0  # enhanced: u + w (G(c) - G(null)) = u + w; prediction G(c) = 1
    torch.testing.assert_close(got, (1 - u - w).square().mean(1))


def test_ema_target_warm_start():
    net = MLPField(MLPConfig(dim=2, hidden=8, n_times=2))
    loss = TwinFlowLoss(ema_decay=0.99)
    loss(net, torch.randn(4, 2))
    for p_t, p in zip(loss.target.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(p_t, p)  # first decay 0: a copy
    assert loss._decay_now == pytest.approx(0.495)  # reference warm-up (1 - 0)(0.99 - 0) / 2


def test_time_grid_and_sampler_reference_equality():
    torch.testing.assert_close(twinflow_time_grid(5), torch.linspace(0, 1, 6, dtype=torch.float64))
    grid = twinflow_time_grid(4, warp=(1.17, 0.8, 1.1), gaps=(0.001, 0.5))
    assert grid[-1] == 1 and (grid.diff() > 0).all() and grid[0] < 1e-3
    net = MLPField(MLPConfig(dim=2, hidden=16, n_times=2))
    x_0 = torch.randn(8, 2, requires_grad=True)
    one = twinflow_sample(net, x_0)
    torch.testing.assert_close(one, x_0 + net(x_0, torch.tensor([[0.0, 1.0]]).expand(8, 2)))
    inst = lambda x, t, c=None: net(x, torch.stack([t, t], -1))  # noqa: E731
    torch.testing.assert_close(
        twinflow_sample(net, x_0, 7, style="mul"),
        sample_euler(inst, x_0, torch.linspace(0, 1, 8, dtype=torch.float64)),
    )
    (g,) = torch.autograd.grad(twinflow_sample(net, x_0, 3, style="any").sum(), x_0)
    assert g.abs().sum() > 0  # differentiable


def test_bad_arguments():
    with pytest.raises(ValueError, match="rcgm_order"):
        TwinFlowLoss(rcgm_order=0)
    with pytest.raises(ValueError, match="all term weights"):
        TwinFlowLoss(0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="style"):
        twinflow_sample(lambda x, t, c=None: x, torch.zeros(2, 2), style="fast")


def test_learns_one_step_8_gaussians():
    # threshold origin: the shared FM teacher's 1-step Euler SWD is 2.61 and its 2-step 1.06
    # (tests/conftest.py); 600 TwinFlow steps of a 3 x 64 MLP (EMA target 0.99)
    # measured 0.66 at 1 NFE, so < 1.0 asks for a 1-step sampler better than the teacher at
    # 2 NFE, with about a third of margin for platform noise.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MLPField(MLPConfig(dim=2, hidden=64, n_times=2)).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = TwinFlowLoss()
    for _ in range(600):
        x_1, _ = eight_gaussians(256, g)
        loss = loss_fn(net, x_1, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = twinflow_sample(net, torch.randn(4000, 2, generator=g, dtype=torch.float32))
    ref, _ = eight_gaussians(4000, torch.Generator().manual_seed(1))
    swd = sliced_wasserstein(x.double(), ref.double(), generator=torch.Generator().manual_seed(2))
    assert swd < 1.0, f"1-NFE sliced W2 {swd:.3f}"


def test_image_shaped_objective_reaches_all_parameters():
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), time_embed_dim=16, n_times=2)
    net = UNetField(UNetConfig(**{**cfg.__dict__, "num_classes": 3}))
    loss_fn = TwinFlowLoss(enhance_ratio=0.5, enhance_uncond="shuffled")
    x_1, cond, g = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), torch.Generator()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):  # zero-initialised output convs block deeper gradients on early steps
        opt.zero_grad()
        loss = loss_fn(net, x_1, cond, generator=g)
        assert loss.shape == (4,) and torch.isfinite(loss).all()
        loss.mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    # The EMA target network lives in the objective; train() checkpoints it through
    # state_dict(), so a new process (a fresh TwinFlowLoss) resumes exactly.
    from flowforge.train import TrainConfig, train

    def data(n: int, generator: torch.Generator | None):
        return eight_gaussians(n, generator)[0].double(), None

    def run(run_dir, steps, loss):
        torch.manual_seed(0)
        net = MLPField(MLPConfig(dim=2, hidden=16, depth=2, n_times=2)).double()
        config = TrainConfig(
            steps=steps, batch_size=32, warmup_steps=0, ema_decay=0.0, ckpt_every=3,
            progress=False, device="cpu", lr=1e-2, schedule="constant",
        )  # fmt: skip
        return train(net, loss, data, config, run_dir).model  # constant lr: steps may grow

    whole = run(tmp_path / "a", 6, TwinFlowLoss(ema_decay=0.9))
    run(tmp_path / "b", 3, TwinFlowLoss(ema_decay=0.9))
    resumed = run(tmp_path / "b", 6, TwinFlowLoss(ema_decay=0.9))
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    # Without the objective's state the resumed run starts a new target and drifts apart.
    lossy = TwinFlowLoss(ema_decay=0.9)
    lossy.load_state_dict = lambda state: None
    run(tmp_path / "c", 3, TwinFlowLoss(ema_decay=0.9))
    drifted = run(tmp_path / "c", 6, lossy)
    gap = max(
        (p - q).abs().max() for p, q in zip(whole.parameters(), drifted.parameters(), strict=True)
    )
    assert gap > 1e-6

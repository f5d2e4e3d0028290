"""2-rectified flow (rf++, card 04): pairs, objective, samplers, a short learning check.

Card check 1 (t-sampler): ``UShapedTime`` itself is tested in tests/losses/test_time_samplers.py
(KS distance to its symmetric density and the closed-form lower tail); here only the card's two
figures for the density ReflowLoss uses by default. Card check 2 (straightness >= 100x, 1-step
SWD) is benchmarks/reflow_2d.py.
"""

import copy
import math

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.reflow import (
    ReflowLoss,
    ReflowPairs,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
    straightness,
)
from flowforge.losses.distances import pseudo_huber
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_ode
from flowforge.train.config import TrainConfig
from flowforge.train.data import BatchStream
from flowforge.train.loop import train


@pytest.fixture
def teacher(teacher_8g):
    """teacher_8g in the suite's dtype (the session fixture is built before the autouse fixture
    sets float64, so it arrives in float32)."""
    return copy.deepcopy(teacher_8g).to(torch.get_default_dtype())


def test_default_time_density_card_check_1():
    t = ReflowLoss().time_sampler(10**6, torch.Generator().manual_seed(0), dtype=torch.float64)
    # Card 04: P(t in [0, .1] u [.9, 1]) = 0.345 for p ~ e^{4t} + e^{4(1-t)} (uniform: 0.2);
    # closed form ((e^{0.4} - 1) + (e^4 - e^{3.6})) / (e^4 - 1) = 0.34503. Binomial sd 0.0005.
    tails = ((t <= 0.1) | (t >= 0.9)).double().mean().item()
    assert abs(tails - 0.345) < 0.003
    # The mean catches a missing mirror (e^{4t} + e^{-4t} has the same tails but mean 0.759).
    assert abs(t.mean().item() - 0.5) < 0.002
    assert t.min() >= 1e-5 and t.max() <= 1 - 1e-5


def _linear_straight_field(A):
    """Exactly straight flow x_t = M_t x_0, M_t = (1 - t) I + t A, so v = (A - I) M_t^{-1} x_t."""
    eye = torch.eye(A.shape[0], dtype=A.dtype)

    def field(x, t, cond=None):
        M = (1 - t)[:, None, None] * eye + t[:, None, None] * A  # (B, D, D)
        x_0 = torch.linalg.solve(M, x)  # (B, D)
        return x_0 @ (A - eye).T

    return field


@pytest.mark.parametrize(
    "grid",
    [[0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.1, 0.2, 0.5, 0.7, 1.0], list(torch.linspace(0, 1, 8))],
    ids=["1", "2", "nonuniform5", "7"],
)
def test_samplers_agree_on_exactly_straight_field(grid):
    # Card check 3: on a straight flow the re-interpolation x_{t+} = t+ x1_hat + (1 - t+) x_0 and
    # the Euler step both stay on the line x_0 -> A x_0, so they agree to rounding.
    g = torch.Generator().manual_seed(0)
    A = torch.eye(3) + 0.4 * torch.randn(3, 3, generator=g)  # M_t invertible on [0, 1] here
    assert min(torch.linalg.det((1 - s) * torch.eye(3) + s * A).abs() for s in grid) > 0.1
    field = _linear_straight_field(A)
    x_0 = torch.randn(16, 3, generator=g)
    grid = torch.tensor(grid, dtype=torch.float64)
    n = len(grid) - 1
    x_new = reflow_sample(field, x_0, n, sampler="new", time_grid=grid)
    x_euler = reflow_sample(field, x_0, n, sampler="euler", time_grid=grid)
    assert (x_new - x_euler).abs().max() < 1e-6
    assert (x_new - x_0 @ A.T).abs().max() < 1e-6


def _curved(x, t, cond=None):
    """A field with curved trajectories (rotation plus a state-dependent push)."""
    rot = torch.stack([-x[:, 1], x[:, 0]], 1)
    return 2.0 * rot + t[:, None] * torch.tanh(x)


def _segment_residual(x_next, x_0, x1_hat, t_next):
    """Distance of x_next from the point t_next x1_hat + (1 - t_next) x_0 and from the line."""
    d = x1_hat - x_0
    lam = ((x_next - x_0) * d).sum(1) / d.square().sum(1)  # projection coefficient
    off_line = (x_next - x_0 - lam[:, None] * d).norm(dim=1)
    return off_line.max().item(), (lam - t_next).abs().max().item()


def test_new_sampler_stays_on_segment_on_curved_field():
    # Card check 3: the new sampler never leaves the segment between x1_hat and the original noise.
    x_0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    grid = torch.tensor([0.0, 0.15, 0.4, 0.6, 0.9, 1.0])
    results = {}
    for sampler in ("new", "euler"):
        _, traj = reflow_sample(
            _curved, x_0, 5, sampler=sampler, time_grid=grid, return_trajectory=True
        )
        worst = 0.0
        for i in range(4):  # the last step lands on x1_hat itself
            t_i = grid[i].expand(32)
            x1_hat = traj[i] + (1 - grid[i]) * _curved(traj[i], t_i)
            off_line, off_time = _segment_residual(traj[i + 1], x_0, x1_hat, grid[i + 1])
            worst = max(worst, off_line, off_time)
        results[sampler] = worst
    assert results["new"] < 1e-10  # collinear, at fraction t_{i+1} of the way to x1_hat
    assert results["euler"] > 1e-2  # Euler drifts off the segment on a curved field
    # The two samplers differ on a curved field but coincide for one step.
    one_new = reflow_sample(_curved, x_0, 1, sampler="new")
    one_euler = reflow_sample(_curved, x_0, 1, sampler="euler")
    torch.testing.assert_close(one_new, one_euler, rtol=0, atol=1e-12)


def test_pairs_are_the_teacher_ode_endpoints(teacher):
    labels = torch.arange(10) % 8
    calls = []
    net = teacher

    def teacher(x, t, cond=None):
        calls.append(cond)
        return net(x, t)

    kw = dict(n_steps=8, solver="heun", cond=labels)
    p1 = make_reflow_pairs(teacher, 10, (2,), generator=torch.Generator().manual_seed(0), **kw)
    p2 = make_reflow_pairs(
        teacher, 10, (2,), generator=torch.Generator().manual_seed(0), batch_size=3, **kw
    )
    torch.testing.assert_close(p1.pairs, p2.pairs, rtol=0, atol=1e-12)  # same noise, any batch
    ref = sample_ode(net, p1.x_0, uniform_grid(8, dtype=torch.float64), method="heun")
    torch.testing.assert_close(p1.x_1, ref, rtol=0, atol=1e-12)
    assert torch.equal(p1.cond, labels) and torch.equal(calls[-1], labels[9:])  # last batch: row 9
    assert abs(p1.x_0.std().item() - 1) < 0.5 and p1.pairs.dtype == torch.float64


def test_pairs_reach_the_loss_through_the_trainer_stream(tmp_path):
    pairs = ReflowPairs(torch.randn(20, 2, 1, 4, 4), torch.arange(20))
    x, cond = BatchStream(pairs.dataset(), seed=0, batch_size=8).chunk(0, 0, 8)
    assert x.shape == (8, 2, 1, 4, 4)
    idx = cond  # labels are the row indices: each chunk row is a whole stored pair
    torch.testing.assert_close(x, pairs.pairs[idx], rtol=0, atol=0)
    pairs.save(tmp_path / "pairs.safetensors")
    back = ReflowPairs.load(tmp_path / "pairs.safetensors")
    assert torch.equal(back.pairs, pairs.pairs) and torch.equal(back.cond, pairs.cond)


def test_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)

    def fixed_t(n, generator=None, device=None, dtype=torch.float32):
        return t.to(dtype)

    def model(x, s, cond=None):
        return 0.5 * x + s[:, None]

    pair = torch.stack([x_0, x_1], 1)
    x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
    v = model(x_t, t)
    target = x_1 - x_0
    huber = (((v - target).square().sum(1) + (0.00054 * 3) ** 2).sqrt() - 0.00054 * 3) / 3
    torch.testing.assert_close(ReflowLoss(fixed_t)(model, pair), huber)
    torch.testing.assert_close(ReflowLoss(fixed_t, weighting="t")(model, pair), t * huber)
    torch.testing.assert_close(
        ReflowLoss(fixed_t, huber_c=0.1)(model, pair), pseudo_huber(v, target, 0.1)
    )
    mse = (v - target).square().mean(1)
    torch.testing.assert_close(ReflowLoss(fixed_t, distance="mse")(model, pair), mse)
    # Perceptual term on x1_hat = x_t + (1 - t) v (the card's z_t - t_card v_card), over 1 - t.
    x1_hat = x_t + (1 - t[:, None]) * v

    def perceptual(a, b):
        return (a - b).abs().sum(1)

    out = ReflowLoss(fixed_t, "mse", weighting="t", perceptual=perceptual,
                     perceptual_over_time=True)(model, pair)  # fmt: skip
    torch.testing.assert_close(out, t * mse + (x1_hat - x_1).abs().sum(1) / (1 - t))


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"shape \(4, 2\).*ReflowPairs.dataset"):
        ReflowLoss()(lambda x, t, c=None: x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="huber_c=0.1 is only used"):
        ReflowLoss(distance="mse", huber_c=0.1)
    with pytest.raises(ValueError, match="perceptual_over_time=True needs"):
        ReflowLoss(perceptual_over_time=True)
    with pytest.raises(ValueError, match="sampler='heun'"):
        reflow_sample(lambda x, t, c=None: x, torch.randn(2, 2), sampler="heun")
    with pytest.raises(ValueError, match="n_steps=1"):
        reflow_sample(
            lambda x, t, c=None: x, torch.randn(2, 2), time_grid=torch.tensor([0, 0.5, 1])
        )
    with pytest.raises(ValueError, match="pairs has shape"):
        ReflowPairs(torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="teacher's architecture"):
        init_from_teacher(MLPField(MLPConfig(hidden=8)), MLPField(MLPConfig(hidden=16)))


def test_reflow_straightens_teacher(teacher):
    # A short card-check-2: 4096 pairs (100-step Euler teacher), student initialised from the
    # teacher, 300 steps of the default rf++ loss (pseudo-Huber, U-shaped t) through train().
    pairs = make_reflow_pairs(teacher, 4096, (2,), generator=torch.Generator().manual_seed(1))
    student = init_from_teacher(MLPField(MLPConfig(dim=2, hidden=128, depth=3)), teacher)
    config = TrainConfig(
        steps=300, batch_size=256, lr=1e-3, schedule="constant", grad_clip=0.0, ema_decay=0,
        progress=False, device="cpu",
    )  # fmt: skip
    student = train(student, ReflowLoss(), pairs.dataset(), config).model
    x_0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s_teacher = straightness(teacher, x_0).mean().item()
        s_student = straightness(student, x_0).mean().item()
        one_teacher = reflow_sample(teacher, x_0, 1)
        one_student = reflow_sample(student, x_0, 1)
    # Measured: straightness 2.60 -> 0.019 (137x); the card's 100x needs its 6k steps on 50k
    # pairs (benchmark), 300 steps reach well past 40x.
    assert s_teacher / s_student > 40
    data, _ = eight_gaussians(2000, torch.Generator().manual_seed(3))

    def sw(a):
        return sliced_wasserstein(
            a, data.double(), 256, generator=torch.Generator().manual_seed(4)
        )

    # Measured: 1-step SW2 teacher 2.61, student 0.34 (teacher 100-step 0.218, floor 0.075).
    assert sw(one_student) < 0.25 * sw(one_teacher)


def test_image_objective_runs_and_grads_reach_parameters():
    cfg = UNetConfig(in_channels=1, base_channels=8, channel_mults=(1, 2), time_embed_dim=16)
    torch.manual_seed(0)
    teacher = UNetField(cfg)
    with torch.no_grad():  # the zero-initialised output conv would make the teacher v = 0
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    teacher.eval().requires_grad_(False)
    pairs = make_reflow_pairs(teacher, 4, (1, 8, 8), n_steps=2, generator=torch.Generator())
    assert pairs.pairs.shape == (4, 2, 1, 8, 8) and not torch.equal(pairs.x_0, pairs.x_1)
    student = init_from_teacher(UNetField(cfg), teacher)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(student(x, t), teacher(x, t), rtol=0, atol=0)
    loss = ReflowLoss(weighting="t")(student, pairs.pairs, generator=torch.Generator())
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    x = reflow_sample(student, pairs.x_0, 2)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_sampler_is_differentiable_and_keeps_float32():
    net = MLPField(MLPConfig(dim=2, hidden=16)).to(torch.bfloat16)
    x_0 = torch.randn(3, 2, dtype=torch.bfloat16)

    def field(x, t, cond=None):  # a half-precision model autocasts its input itself
        return net(x.to(torch.bfloat16), t.to(torch.bfloat16)).to(x.dtype)

    x = reflow_sample(field, x_0, 3)
    assert x.dtype == torch.float32
    x.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert math.isfinite(x.sum().item())

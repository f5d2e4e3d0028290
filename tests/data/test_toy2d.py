import math

import pytest
import torch

from flowforge.data.toy2d import (
    checkerboard,
    circles,
    eight_gaussians,
    eight_gaussians_params,
    moons,
    pinwheel,
    spirals,
    swiss_roll,
)

# (sampler, number of classes stated in its docstring, default parameters)
SAMPLERS = [
    (eight_gaussians, 8),
    (moons, 2),
    (circles, 2),
    (swiss_roll, 4),
    (checkerboard, 8),
    (pinwheel, 5),
    (spirals, 2),
]
IDS = [s.__name__ for s, _ in SAMPLERS]


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler, num_classes", SAMPLERS, ids=IDS)
def test_shapes_dtypes_labels_and_determinism(sampler, num_classes):
    x, k = sampler(4000, gen(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert k.shape == (4000,) and k.dtype == torch.int64
    assert torch.isfinite(x).all()
    # Every class appears (4000 i.i.d. draws, at most 8 classes) and no other label.
    assert torch.equal(k.unique(), torch.arange(num_classes))
    x2, k2 = sampler(4000, gen(0))
    assert torch.equal(x, x2) and torch.equal(k, k2)
    assert not torch.equal(x, sampler(4000, gen(1))[0])
    assert sampler(0, gen(0))[0].shape == (0, 2)


def test_eight_gaussians_moments():
    # E[x] = 0, E||x||^2 = r^2 + 2 std^2 = 16.5; per-class means are the centres. Tolerances are
    # 4 standard errors at n = 20000.
    n = 20_000
    x, k = eight_gaussians(n, gen(0))
    x = x.double()
    assert (x.mean(0).abs() < 4 * x.std(0) / math.sqrt(n)).all()
    sq = x.square().sum(1)
    assert abs(sq.mean().item() - 16.5) < 4 * sq.std().item() / math.sqrt(n)
    means, std = eight_gaussians_params()
    for j in range(8):
        xj = x[k == j]
        assert (xj.mean(0) - means[j]).norm() < 4 * std * math.sqrt(2 / len(xj))
        assert xj.std(0).sub(std).abs().max() < 0.05  # sd of the sample sd: 0.5/sqrt(2*2500)


def test_eight_gaussians_params():
    means, std = eight_gaussians_params(radius=2.0, std=0.1)
    assert std == 0.1
    assert means.dtype == torch.float32
    assert torch.allclose(means.norm(dim=1).double(), torch.full((8,), 2.0))
    angles = torch.atan2(means[:, 1], means[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles.double(), torch.arange(8) * math.pi / 4, atol=1e-6)


def test_circles_radii():
    x, k = circles(1000, gen(0), radius=3.0, factor=0.25, noise=0.0)
    r = x.norm(dim=1).double()
    assert torch.allclose(r, torch.where(k == 0, 3.0, 0.75).double(), atol=1e-5)


def test_moons_geometry():
    # Undo centring and scaling: outer moon on the upper unit semicircle, inner moon on the
    # lower unit semicircle centred at (1, 1/2).
    x, k = moons(1000, gen(0), noise=0.0, scale=2.0)
    p = x.double() / 2 + torch.tensor([0.5, 0.25])
    outer, inner = p[k == 0], p[k == 1] - torch.tensor([1.0, 0.5])
    assert torch.allclose(outer.norm(dim=1), torch.ones(len(outer)), atol=1e-5)
    assert torch.allclose(inner.norm(dim=1), torch.ones(len(inner)), atol=1e-5)
    assert (outer[:, 1] >= -1e-6).all() and (inner[:, 1] <= 1e-6).all()


def test_checkerboard_dark_cells_and_labels():
    x, k = checkerboard(4000, gen(0))
    cell = ((x + 4) / 2).floor().long()  # column i, row j of the 4 x 4 board of side 2
    assert ((cell >= 0) & (cell < 4)).all()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    assert torch.equal(k, cell[:, 0] * 2 + cell[:, 1] // 2)
    # Uniform on the dark area: each of the 8 cells holds 1/8 of the mass (4-sigma band).
    counts = torch.bincount(k, minlength=8).double() / 4000
    assert (counts - 0.125).abs().max() < 4 * math.sqrt(0.125 * 0.875 / 4000)


def test_swiss_roll_labels_follow_the_roll():
    # Without noise |x| = s / 5 with s = 1.5 pi (1 + 2u) and label floor(4u): each label owns an
    # interval of radii.
    x, k = swiss_roll(2000, gen(0), noise=0.0)
    u = (x.double().norm(dim=1) * 5 / (1.5 * math.pi) - 1) / 2
    assert ((u >= -1e-5) & (u <= 1 + 1e-5)).all()
    assert torch.equal(k, (u * 4).floor().long().clamp(0, 3))


def test_pinwheel_arms_are_rotations_of_each_other():
    # Arm j is arm 0 turned clockwise by 2 pi j / 5, so its mean turned back matches arm 0's.
    x, k = pinwheel(20_000, gen(0))
    x = x.double()
    m0 = x[k == 0].mean(0)
    for j in range(1, 5):
        a = 2 * math.pi * j / 5
        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        assert (rot @ x[k == j].mean(0) - m0).norm() < 0.1  # ~5 SE: sd ~1.5, 4000 per arm


def test_spirals_are_point_reflections():
    # Label 1 is -1 times label 0 in distribution: compare radius quantiles and means.
    x, k = spirals(20_000, gen(0))
    a, b = x[k == 0].double(), -x[k == 1].double()
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(a.norm(dim=1).quantile(q), b.norm(dim=1).quantile(q), rtol=0.05)
    assert (a.mean(0) - b.mean(0)).norm() < 0.15  # ~4 SE: coordinate sd ~1.6, 10000 each


def test_checkerboard_rejects_odd_board():
    with pytest.raises(ValueError, match="num_cells=3"):
        checkerboard(10, num_cells=3)

"""SymmFlowLoss: channel split, closed-form targets, dequantisation, validation, learning."""

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_params
from flowforge.losses.symmflow import SymmFlowLoss, channels_to_masks, masks_to_channels
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.symmflow import symmflow_generate, symmflow_segment

# (x shape, y shape): 2-D points with an 8-class one-hot, and images with a 2-channel map.
SHAPES = [((16, 2), (16, 8)), ((4, 3, 5, 6), (4, 2, 5, 6))]


class FixedTime:
    """A time sampler that returns the same t for every example."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self, n, generator=None, device=None, dtype=torch.float32):
        return torch.full((n,), self.t, device=device, dtype=dtype)


class Recorder:
    """A field returning ``out`` (or zeros) that remembers its inputs."""

    def __init__(self, out: torch.Tensor | None = None) -> None:
        self.out = out

    def __call__(self, state, t):
        self.state, self.t = state, t
        return torch.zeros_like(state) if self.out is None else self.out


def _data(x_shape, y_shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(x_shape, generator=g)
    labels = torch.randint(0, y_shape[1], (y_shape[0], *y_shape[2:]), generator=g)
    return x, masks_to_channels(labels, y_shape[1])


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
@pytest.mark.parametrize("image_weight", [1.0, 0.0])
def test_symmetry_other_half_gets_exactly_zero_gradient(x_shape, y_shape, image_weight):
    # Card check 3: w_img = 1 leaves the y-outputs without gradient, w_img = 0 the x-outputs.
    x, y = _data(x_shape, y_shape)
    Cx = x.shape[1]
    weight = torch.randn(x.shape[1] + y.shape[1], dtype=x.dtype, requires_grad=True)
    outputs = []

    def field(state, t):
        out = torch.tanh(state) * weight.view(1, -1, *[1] * (state.dim() - 2)) + t.view(
            -1, *[1] * (state.dim() - 1)
        )
        outputs.append(out)
        return out

    loss = SymmFlowLoss(x_channels=Cx, image_weight=image_weight)
    value = loss(field, x, y, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(value.sum(), outputs[0])
    zero, live = (
        (grad[:, Cx:], grad[:, :Cx]) if image_weight == 1.0 else (grad[:, :Cx], grad[:, Cx:])
    )
    assert torch.equal(zero, torch.zeros_like(zero))
    assert (live != 0).all()


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
def test_loss_equals_hand_computation(x_shape, y_shape):
    # The card's formulas with the draws replayed in the documented order: t, eps_x, eps_y, U.
    x, y = _data(x_shape, y_shape)
    s, w, beta = 0.1, 0.7, 15.0
    v = torch.randn(x.shape[0], x.shape[1] + y.shape[1], *x.shape[2:])
    loss = SymmFlowLoss(x.shape[1], sigma_min=s, image_weight=w, dequant_beta=beta)
    rec = Recorder(v)
    got = loss(rec, x, y, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    t = torch.rand(x.shape[0], generator=g)
    assert torch.equal(rec.t, t)
    eps_x, eps_y = torch.randn(x.shape, generator=g), torch.randn(y.shape, generator=g)
    y_deq = y + beta * (torch.rand(y.shape, generator=g) - 0.5) / 127.5
    u_x = x - (1 - s) * eps_x
    u_y = eps_y - (1 - s) * y_deq  # the sign the card warns about: not y - eps_y
    v_x, v_y = v[:, : x.shape[1]], v[:, x.shape[1] :]
    want = w * (v_x - u_x).square().flatten(1).mean(1) + (1 - w) * (v_y - u_y).square().flatten(
        1
    ).mean(1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.shape == (x.shape[0],)


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
def test_targets_are_time_derivatives_of_the_paths(x_shape, y_shape):
    # A field that inverts x_t, y_t for the noises and returns the card's u_x, u_y scores zero;
    # the mis-signed semantic target u_y = (1 - s) y - eps_y does not.
    x, y = _data(x_shape, y_shape)
    s, Cx = 1e-4, x.shape[1]

    def oracle(sign):
        def field(state, t):
            t_ = t.view(-1, *[1] * (state.dim() - 1))
            a = 1 - (1 - s) * t_
            eps_x = (state[:, :Cx] - t_ * x) / a  # x_t = a eps_x + t x
            eps_y = (state[:, Cx:] - a * y) / t_  # y_t = a y + t eps_y
            return torch.cat([x - (1 - s) * eps_x, sign * (eps_y - (1 - s) * y)], dim=1)

        return field

    loss = SymmFlowLoss(Cx, sigma_min=s, dequant_beta=0.0, time_sampler=FixedTime(0.37))
    exact = loss(oracle(1.0), x, y, generator=torch.Generator().manual_seed(0))
    flipped = loss(oracle(-1.0), x, y, generator=torch.Generator().manual_seed(0))
    assert exact.abs().max() < 1e-20
    assert flipped.min() > 0.1  # (1 - w) mean (2 u_y)^2 = 0.4 mean u_y^2, with E u_y^2 = 2


def test_dequantisation_noise_and_start_state():
    # At t = 0: x_t = eps_x, y_t = y + beta (U - 0.5) / 127.5, |y_t - y| <= beta / 255.
    x, y = _data((64, 2), (64, 8))
    beta = 15.0
    rec = Recorder()
    SymmFlowLoss(2, dequant_beta=beta, time_sampler=FixedTime(0.0))(
        rec, x, y, generator=torch.Generator().manual_seed(0)
    )
    noise = rec.state[:, 2:] - y
    assert noise.abs().max() <= beta / 255
    assert noise.abs().max() > 0.95 * beta / 255  # 512 uniform draws fill the interval
    assert noise.mean().abs() < 0.1 * beta / 255
    assert torch.equal(rec.t, torch.zeros(64))
    eps_x = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rec.state[:, :2], eps_x)


def test_noises_of_the_two_halves_are_independent():
    # With equal channel counts a shared eps would give corr(eps_x, eps_y) = 1.
    x, y = _data((2000, 2), (2000, 2))
    rec = Recorder()
    SymmFlowLoss(2, sigma_min=0.0, dequant_beta=0.0, time_sampler=FixedTime(0.5))(
        rec, x, y, generator=torch.Generator().manual_seed(0)
    )
    eps_x = (rec.state[:, :2] - 0.5 * x) / 0.5
    eps_y = (rec.state[:, 2:] - 0.5 * y) / 0.5
    corr = torch.corrcoef(torch.stack([eps_x.flatten(), eps_y.flatten()]))[0, 1]
    assert corr.abs() < 0.05  # sd of the sample correlation of 4000 pairs: 0.016


@pytest.mark.parametrize(
    "kwargs, x, cond, error, match",
    [
        ({}, torch.zeros(4, 2), None, ValueError, "cond is None"),
        ({}, torch.zeros(4, 2), torch.zeros(4, 8, dtype=torch.long), TypeError, "cond has type"),
        ({}, torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 8), TypeError, "x_1 has type"),
        ({}, torch.zeros(4, 2), torch.zeros(5, 8), ValueError, "same batch size"),
        ({}, torch.zeros(4, 2, 3, 3), torch.zeros(4, 8, 3, 4), ValueError, "spatial shape"),
        ({}, torch.zeros(4, 3), torch.zeros(4, 8), ValueError, "x_channels=2"),
        ({}, torch.zeros(4), torch.zeros(4, 8), ValueError, r"pass \(B, C, ...\)"),
        ({"image_weight": 1.5}, None, None, ValueError, "image_weight=1.5"),
        ({"sigma_min": 1.0}, None, None, ValueError, "sigma_min=1.0"),
        ({"dequant_beta": -1.0}, None, None, ValueError, "dequant_beta=-1.0"),
    ],
)
def test_errors_name_the_argument(kwargs, x, cond, error, match):
    with pytest.raises(error, match=match):
        loss = SymmFlowLoss(2, **kwargs)
        loss(Recorder(), x, cond)


def test_x_channels_must_be_a_positive_int():
    with pytest.raises(TypeError, match="x_channels=2.0"):
        SymmFlowLoss(2.0)
    with pytest.raises(ValueError, match="x_channels=0"):
        SymmFlowLoss(0)


def test_model_output_shape_is_checked():
    with pytest.raises(ValueError, match="its output must match its input"):
        SymmFlowLoss(2)(lambda state, t: state[:, :2], torch.zeros(4, 2), torch.zeros(4, 8))


def test_masks_to_channels_round_trip():
    masks = torch.randint(0, 5, (3, 4, 6))
    y = masks_to_channels(masks, 5)
    assert y.shape == (3, 5, 4, 6) and y.dtype == torch.get_default_dtype()
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(y.sum(1), torch.full((3, 4, 6), 2.0 - 5))  # one +1, four -1
    assert torch.equal(channels_to_masks(y), masks)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        masks_to_channels(torch.tensor([5]), 5)
    with pytest.raises(TypeError, match="integer class indices"):
        masks_to_channels(torch.zeros(3), 5)


def _accuracies(model, n=2000, seed=1):
    means, std = eight_gaussians_params()
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(n) % 8
    with torch.no_grad():
        y_k = masks_to_channels(k, 8, dtype=torch.float32)
        x = symmflow_generate(model, y_k, 2, n_steps=20, generator=g)
        hit = ((x - means[k]).norm(dim=1) < 3 * std).float()
        hit_min = min(hit[k == j].mean().item() for j in range(8))
        x, labels = eight_gaussians(n, g)
        seg = [
            (symmflow_segment(model, x, 8, n_steps=m, generator=g).argmax(1) == labels)
            .float()
            .mean()
            .item()
            for m in (20, 1)
        ]
    return hit_min, *seg


def test_learns_eight_gaussians_generation_and_segmentation():
    # Reduced card checks 1 and 2: 8-gaussians (radius 4, std 0.5), y = one-hot of the mode in
    # [-1, 1], MLP 3x128 on concat(x_t, y_t, e(t)), Adam 2e-3 with cosine decay, 3000 steps.
    torch.manual_seed(0)
    model = MLPField(MLPConfig(dim=10, hidden=128, depth=3)).float()
    untrained = _accuracies(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3000)
    loss_fn = SymmFlowLoss(x_channels=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3000):
        x, k = eight_gaussians(256, g)
        loss = loss_fn(model, x, masks_to_channels(k, 8, dtype=torch.float32), generator=g)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        sched.step()
    gen_min, seg_20, seg_1 = _accuracies(model)
    # Card thresholds (10k steps, 3x256): >= 95 % generation for every mode, >= 95 % 20-step
    # and >= 85 % one-step segmentation; benchmarks/symmflow_2d.py runs that check. Measured here
    # on CPU (seeds 0-3): worst-mode generation 0.888-0.892, segmentation 0.914-0.921 (20 steps)
    # and 0.988-0.990 (1 step); untrained 0.00 / 0.13 / 0.13 (chance 1/8). The exact field of
    # this toy reaches only 0.93 with 20 segmentation steps (tests/solvers/test_symmflow.py), so
    # the 20-step bar sits below the card's. Margins: 0.04-0.09 under each measurement.
    assert max(untrained) < 0.3
    assert gen_min > 0.80
    assert seg_20 > 0.85
    assert seg_1 > 0.95

"""SymmFlow samplers: closed-form fields, integration direction, the exact 8-gaussians field."""

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_params
from flowforge.solvers.symmflow import symmflow_classify, symmflow_generate, symmflow_segment

SIGMA_MIN = 1e-4
# (x shape, y shape): 2-D points with an 8-class map, images with a 2-channel map.
SHAPES = [((6, 2), (6, 8)), ((3, 3, 4, 5), (3, 2, 4, 5))]


def _view(t, like):
    return t.view(-1, *[1] * (like.dim() - 1))


def single_pair_field(x_star, y_star, s=SIGMA_MIN):
    """Exact marginal velocity when the data is one image x* paired with one map y*.

    x_t = a eps_x + t x* and y_t = a y* + t eps_y (a = 1 - (1 - s) t) are straight lines, so
    E[u | state] inverts them: u_x = x* - (1 - s) (x_t - t x*) / a and
    u_y = (y_t - a y*) / t - (1 - s) y*.
    """

    def field(state, t):
        Cx = x_star.shape[1]
        t_ = _view(t, state)
        a = 1 - (1 - s) * t_
        x, y = state[:, :Cx], state[:, Cx:]
        u_x = x_star - (1 - s) * (x - t_ * x_star) / a
        safe_t = torch.where(t_ > 0, t_, torch.ones_like(t_))  # at t = 0, y_t = y*: E eps_y = 0
        u_y = (t_ > 0) * (y - a * y_star) / safe_t - (1 - s) * y_star
        return torch.cat([u_x, u_y], dim=1)

    return field


def _noise(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
@pytest.mark.parametrize("method, n_steps", [("euler", 1), ("euler", 7), ("heun", 3), ("rk4", 2)])
def test_generate_follows_the_straight_line_to_the_image(x_shape, y_shape, method, n_steps):
    # Trajectories of the single-pair field are straight, so every RK method is exact:
    # x_1 = sigma_min eps_x + x*.
    x_star, y_star = _noise(x_shape, 1), _noise(y_shape, 2)
    field = single_pair_field(x_star, y_star)
    g = torch.Generator().manual_seed(3)
    x = symmflow_generate(field, y_star, x_shape[1], n_steps, method, generator=g)
    eps_x = _noise(x_shape, 3)
    torch.testing.assert_close(x, x_star + SIGMA_MIN * eps_x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
@pytest.mark.parametrize("method, n_steps", [("euler", 1), ("euler", 5), ("midpoint", 2)])
def test_segment_integrates_backward_to_the_mask(x_shape, y_shape, method, n_steps):
    # Backward from [x*, eps_y] at t = 1 the map returns exactly to y* at t = 0.
    x_star, y_star = _noise(x_shape, 1), _noise(y_shape, 2)
    field = single_pair_field(x_star, y_star)
    y = symmflow_segment(
        field, x_star, y_shape[1], n_steps, method, generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(y, y_star, rtol=1e-10, atol=1e-10)


class Recorder:
    """A nonlinear field that records the times it is called with."""

    def __init__(self):
        self.times = []

    def __call__(self, state, t):
        self.times.append(t)
        return torch.sin(3 * state) * (1 + _view(t, state)) + state.flip(1)


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
def test_one_euler_step_directions(x_shape, y_shape):
    # Segmentation: [x, eps_y] - v([x, eps_y], 1) (backward); generation: [eps_x, y] + v(., 0).
    x, y = _noise(x_shape, 1), _noise(y_shape, 2)
    Cx, B = x_shape[1], x_shape[0]
    field = Recorder()
    got = symmflow_segment(field, x, y_shape[1], generator=torch.Generator().manual_seed(5))
    start = torch.cat([x, _noise(y_shape, 5)], dim=1)
    torch.testing.assert_close(got, (start - field(start, torch.ones(B)))[:, Cx:])
    assert torch.equal(field.times[0], torch.ones(B))

    field = Recorder()
    got = symmflow_generate(field, y, Cx, n_steps=1, generator=torch.Generator().manual_seed(6))
    start = torch.cat([_noise(x_shape, 6), y], dim=1)
    torch.testing.assert_close(got, (start + field(start, torch.zeros(B)))[:, :Cx])
    assert torch.equal(field.times[0], torch.zeros(B))


def test_trajectories_and_time_grids():
    x, y = _noise((4, 2), 1), _noise((4, 3), 2)
    field = Recorder()
    y_0, traj = symmflow_segment(field, x, 3, n_steps=4, return_trajectory=True)
    assert traj.shape == (5, 4, 5)
    torch.testing.assert_close(traj[0, :, :2], x)
    torch.testing.assert_close(traj[-1, :, 2:], y_0)
    assert [t[0].item() for t in field.times] == [1.0, 0.75, 0.5, 0.25]

    field = Recorder()
    x_1, traj = symmflow_generate(field, y, 2, n_steps=4, return_trajectory=True)
    assert traj.shape == (5, 4, 5)
    torch.testing.assert_close(traj[0, :, 2:], y)
    torch.testing.assert_close(traj[-1, :, :2], x_1)
    assert [t[0].item() for t in field.times] == [0.0, 0.25, 0.5, 0.75]


def test_half_precision_input_integrates_in_float32_with_gradients():
    w = torch.tensor(0.5, dtype=torch.float32, requires_grad=True)
    seen = []

    def field(state, t):
        seen.append(state.dtype)
        return w * state

    y = symmflow_segment(field, torch.ones(3, 2, dtype=torch.bfloat16), 4, n_steps=2)
    assert y.dtype == torch.float32 and set(seen) == {torch.float32}
    y.sum().backward()
    assert w.grad is not None and w.grad != 0


def test_classify_averages_the_map():
    # Single pair with image-level label 2 of 3 broadcast to a 4x5 map: every image gets 2.
    x_star = _noise((5, 1, 4, 5), 1)
    y_star = -torch.ones(5, 3, 4, 5)
    y_star[:, 2] = 1
    labels = symmflow_classify(single_pair_field(x_star, y_star), x_star, num_classes=3)
    assert labels.tolist() == [2] * 5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: symmflow_generate(Recorder(), torch.zeros(2, 3, dtype=torch.long), 2), "y is"),
        (lambda: symmflow_generate(Recorder(), torch.zeros(2, 3), 0), "x_channels=0"),
        (lambda: symmflow_segment(Recorder(), torch.zeros(2), 3), "x is"),
        (lambda: symmflow_segment(Recorder(), torch.zeros(2, 2), 3, n_steps=0), "n_steps=0"),
        (lambda: symmflow_segment(Recorder(), torch.zeros(2, 2), 3, method="eulr"), "eulr"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def eight_gaussians_field(radius=4.0, std=0.5, s=SIGMA_MIN):
    """The exact SymmFlow field of 8-gaussians x paired with one-hot y_k in [-1, 1].

    Given k, x_t ~ N(t mu_k, (t^2 std^2 + a^2) I) and y_t ~ N(a y_k, t^2 I); the field is the
    posterior mixture over k of the Gaussian conditional expectations of u_x and u_y.
    """
    means, _ = eight_gaussians_params(radius, std)
    means, Y = means.double(), 2 * torch.eye(8) - 1  # (8, 2), (8, 8)

    def field(state, t):
        x, y = state[:, None, :2], state[:, None, 2:]  # (B, 1, 2), (B, 1, 8)
        t = t.clamp(1e-9, 1)[:, None, None]
        a = 1 - (1 - s) * t
        var_x = t**2 * std**2 + a**2
        dx, dy = x - t * means, y - a * Y  # (B, 8, 2), (B, 8, 8)
        log_w = -dx.square().sum(-1) / (2 * var_x[..., 0]) - dy.square().sum(-1) / (
            2 * t[..., 0] ** 2
        )
        w = torch.softmax(log_w - torch.log(var_x[..., 0]), dim=1)[..., None]  # (B, 8, 1)
        u_x = means + t * std**2 / var_x * dx - (1 - s) * a / var_x * dx
        u_y = dy / t - (1 - s) * Y
        return torch.cat([(w * u_x).sum(1), (w * u_y).sum(1)], dim=1)

    return field


def test_exact_eight_gaussians_field_generates_and_segments():
    # Card checks 1 and 2 with the exact field (the loss minimiser for undequantised masks),
    # n = 2000. Measured (float64, seed 1): generation hit rate 0.989 (the data itself:
    # 1 - exp(-4.5) = 0.989 within 3 std), one-step segmentation 0.998 (the Bayes classifier's
    # accuracy), 20-step segmentation 0.929 (0.916 with 200 steps, so not a discretisation
    # error): the joint ODE does not keep every x-y pairing at this scale, so the card's 95 %
    # bar for 20 steps is out of reach here (see benchmarks/symmflow_2d.py).
    means, std = eight_gaussians_params()
    field = eight_gaussians_field()
    g = torch.Generator().manual_seed(1)
    k = torch.arange(2000) % 8
    x = symmflow_generate(field, 2 * torch.eye(8)[k] - 1, 2, n_steps=20, generator=g)
    assert ((x - means[k]).norm(dim=1) < 3 * std).double().mean() > 0.97
    x, labels = eight_gaussians(2000, g)
    seg = [
        (symmflow_segment(field, x.double(), 8, m, generator=g).argmax(1) == labels)
        .double()
        .mean()
        for m in (1, 20)
    ]
    assert seg[0] > 0.99
    assert 0.88 < seg[1] < 0.96

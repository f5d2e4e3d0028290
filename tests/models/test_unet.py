import pytest
import torch

from flowforge.losses.fm import FlowMatchingLoss
from flowforge.models.dit import DiTConfig, DiTField
from flowforge.models.layers import ImageCond
from flowforge.models.unet import UNetConfig, UNetField


def small(**kw) -> UNetField:
    base = dict(base_channels=8, time_embed_dim=16)
    return UNetField(UNetConfig(**(base | kw)))


def perturb(net: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its init, so zero-initialised layers pass signals and grads."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))


def bars(n: int, g: torch.Generator) -> torch.Tensor:
    """8x8 images in {-1, 1}: one horizontal or vertical bar of +1 at a random position."""
    pos = torch.randint(0, 8, (n,), generator=g)
    vert = torch.randint(0, 2, (n,), generator=g).bool()
    i = torch.arange(8)
    rows = (i[None, :, None] == pos[:, None, None]).expand(n, 8, 8)
    cols = (i[None, None, :] == pos[:, None, None]).expand(n, 8, 8)
    return (2.0 * torch.where(vert[:, None, None], cols, rows) - 1)[:, None]


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("num_classes, cond_channels", [(0, 0), (3, 0), (0, 2), (3, 2)])
def test_output_shape_and_zero_init(size, num_classes, cond_channels):
    net = small(
        in_channels=3,
        channel_mults=(1, 2, 2),
        num_classes=num_classes,
        cond_channels=cond_channels,
        attention_levels=(1,),
    )
    x, t = torch.randn(2, 3, size, size), torch.rand(2)
    labels = torch.tensor([0, 3]) if num_classes else None
    channels = torch.randn(2, cond_channels, size, size) if cond_channels else None
    out = net(x, t, ImageCond(labels, channels))
    assert out.shape == x.shape
    assert out.abs().max() == 0  # zero-initialised output conv: v = 0 at init
    perturb(net)
    out = net(x, t, ImageCond(labels, channels))
    assert out.shape == x.shape and out.abs().min() > 0


def test_out_channels_and_plain_tensor_conds():
    net = small(in_channels=1, out_channels=2, num_classes=3, cond_channels=1)
    perturb(net)
    x, t, m = torch.randn(2, 1, 8, 8), torch.rand(2), torch.rand(2, 1, 8, 8)
    assert net(x, t, m).shape == (2, 2, 8, 8)
    # a float tensor is the concatenated channels (labels null), as in ImageCond(None, m)
    torch.testing.assert_close(net(x, t, m), net(x, t, ImageCond(torch.tensor([3, 3]), m)))
    # an integer tensor is labels
    net2 = small(num_classes=3)
    perturb(net2)
    y = torch.tensor([1, 2])
    torch.testing.assert_close(net2(x, t, y), net2(x, t, ImageCond(labels=y)))


def test_null_class_equals_none_and_labels_act_per_example():
    net = small(num_classes=2)
    perturb(net)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    null = torch.full((4,), net.null_class)
    torch.testing.assert_close(net(x, t, None), net(x, t, null))
    a = net(x, t, torch.tensor([0, 1, 0, 1]))
    b = net(x, t, torch.tensor([2, 1, 0, 1]))
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1:], b[1:])  # GroupNorm and convs act per example


def test_gradients_reach_every_parameter():
    net = small(num_classes=3, cond_channels=1, attention_levels=(0, 1), num_res_blocks=2)
    perturb(net)
    x, t, m = torch.randn(5, 1, 8, 8), torch.rand(5), torch.randn(5, 1, 8, 8)
    net(x, t, ImageCond(torch.tensor([0, 1, 2, 3, 0]), m)).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_round_trip_reproduces_outputs():
    net = small(num_classes=3, cond_channels=1)
    perturb(net)
    torch.manual_seed(1)
    other = small(num_classes=3, cond_channels=1)
    x, t, m = torch.randn(3, 1, 16, 16), torch.rand(3), torch.randn(3, 1, 16, 16)
    y = torch.tensor([0, 1, 3])
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(x, t, ImageCond(y, m)), net(x, t, ImageCond(y, m)))


@pytest.mark.parametrize(
    "x_shape, cond, match",
    [
        ((2, 2, 8, 8), None, "2 channels .*in_channels=1"),
        ((2, 1, 8, 6), None, r"\(8, 6\), not divisible by 4"),
        ((1, 8, 8), None, "pass a batch of images"),
        ((2, 1, 8, 8), ImageCond(torch.tensor([0, 4])), "label 4, outside the valid range"),
        ((2, 1, 8, 8), ImageCond(torch.tensor([0])), r"labels have shape \(1,\)"),
        ((2, 1, 8, 8), torch.zeros(2, 1, 4, 4), r"shape \(2, 1, 4, 4\) .* shape \(2, 1, 8, 8\)"),
        ((2, 1, 8, 8), torch.zeros(2, 3, 8, 8), r"pass channels of shape \(2, 1, 8, 8\)"),
    ],
)
def test_bad_inputs_raise_named_errors(x_shape, cond, match):
    net = small(channel_mults=(1, 2, 2), num_classes=3, cond_channels=1)
    if isinstance(cond, ImageCond):
        cond = ImageCond(cond.labels, torch.zeros(2, 1, *x_shape[2:]))
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(x_shape), torch.rand(x_shape[0]), cond)


def test_missing_or_unexpected_conditions():
    x, t = torch.zeros(2, 1, 8, 8), torch.rand(2)
    with pytest.raises(ValueError, match="cond_channels=1 .*none were given"):
        small(cond_channels=1, num_classes=2)(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes=0"):
        small()(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="cond_channels=0"):
        small()(x, t, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"t has shape \(3,\)"):
        small()(x, torch.rand(3))
    with pytest.raises(TypeError, match="ImageCond"):
        small()(x, t, [0, 1])
    with pytest.raises(ValueError, match="attention_levels"):
        small(attention_levels=(2,))


def test_flow_matching_learns_bars():
    # 150 Adam steps of rectified-flow matching on 8x8 bar images. The loss at init (v = 0) is
    # E|x_1 - x_0|^2 / 64 = 2.0; the best constant field (v = E[x_1]) scores 1 + Var(x_1) = 1.44
    # per pixel (a pixel is +1 w.p. 1/8). Measured after training: 0.41; threshold 0.7, half
    # the best constant field, so the UNet must have learned an x_t-dependent velocity.
    g = torch.Generator().manual_seed(0)
    net = small(mid_attention=False)
    loss = FlowMatchingLoss()
    x_eval = bars(256, g)

    def evaluate() -> float:
        with torch.no_grad():
            return loss(net, x_eval, generator=torch.Generator().manual_seed(1)).mean().item()

    initial = evaluate()
    assert abs(initial - 2.0) < 0.15
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(150):
        value = loss(net, bars(32, g), generator=g).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    assert evaluate() < 0.7


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_image_models_take_two_times_per_example(arch):
    if arch == "unet":
        net = UNetField(UNetConfig(base_channels=8, n_times=2))
    else:
        net = DiTField(DiTConfig(input_size=8, hidden=32, depth=1, n_times=2))
    for p in net.parameters():  # undo zero-initialised outputs so the times show
        torch.nn.init.normal_(p, std=0.1)
    x, s, t = torch.randn(2, 1, 8, 8), torch.rand(2), torch.rand(2)
    out = net(x, torch.stack([s, t], -1))
    assert (out - net(x, torch.stack([s, t + 0.3], -1))).abs().max() > 1e-4
    assert (out - net(x, torch.stack([s + 0.3, t], -1))).abs().max() > 1e-4
    with pytest.raises(ValueError, match="n_times=2"):
        net(x, t)


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_time_scale_sets_the_frequency_of_the_time_features(arch):
    # d/dt cos(s f t) is bounded by s * max f = s: scale 1 gives features with slope <= 1
    # (smooth in t, for JVP targets), the default 1000 slopes near 1000.
    for scale, low, high in ((1.0, 0.0, 1.0), (1000.0, 100.0, 1000.0)):
        if arch == "unet":
            net = UNetField(UNetConfig(base_channels=8, time_scale=scale))
        else:
            net = DiTField(DiTConfig(input_size=8, hidden=32, depth=1, time_scale=scale))
        emb = net.time_embed[0]
        t = torch.linspace(0.1, 0.9, 101)
        slope = ((emb(t + 1e-7) - emb(t)) / 1e-7).abs().max()
        assert low < slope <= high * (1 + 1e-4), (scale, slope)

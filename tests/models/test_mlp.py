import pytest
import torch
from torch import nn

from flowforge.models.mlp import MLPConfig, MLPField


@pytest.mark.parametrize("time_embed_dim", [0, 16])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_output_shape_and_flattening(time_embed_dim, num_classes):
    cfg = MLPConfig(
        dim=12, hidden=32, depth=2, time_embed_dim=time_embed_dim, num_classes=num_classes
    )
    net = MLPField(cfg)
    x, t = torch.randn(5, 3, 4), torch.rand(5)
    cond = torch.tensor([0, 1, 2, 3, 0]) if num_classes else None
    out = net(x, t, cond)
    assert out.shape == x.shape
    # (B, 3, 4) input is the (B, 12) input reshaped, and so is the output
    torch.testing.assert_close(out.reshape(5, 12), net(x.reshape(5, 12), t, cond))


def test_gradients_reach_every_parameter():
    net = MLPField(MLPConfig(dim=3, hidden=16, depth=3, time_embed_dim=8, num_classes=4))
    x, t = torch.randn(10, 3), torch.rand(10)
    cond = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])  # every row of the table, null included
    net(x, t, cond).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    # each embedding row used by the batch gets a gradient
    assert (net.class_embed.weight.grad.abs().sum(1) > 0).all()


def test_null_class_and_none_agree_and_labels_matter():
    net = MLPField(MLPConfig(dim=2, hidden=16, num_classes=2))
    x, t = torch.randn(4, 2), torch.rand(4)
    null = torch.full((4,), net.null_class)
    torch.testing.assert_close(net(x, t, None), net(x, t, null))
    assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t, null))
    # labels act per example: changing example 0's label changes only output 0
    a = net(x, t, torch.tensor([0, 1, 0, 1]))
    b = net(x, t, torch.tensor([2, 1, 0, 1]))
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1:], b[1:])


def test_raw_time_mode_equals_hand_built_sequential():
    # torchcfm's MLP(dim, w, time_varying=True): Linear(dim+1, w), SELU, (Linear(w, w), SELU) x 2,
    # Linear(w, dim) applied to cat([x, t]) -- written out by hand here
    dim, w = 2, 32
    ref = nn.Sequential(
        nn.Linear(dim + 1, w),
        nn.SELU(),
        nn.Linear(w, w),
        nn.SELU(),
        nn.Linear(w, w),
        nn.SELU(),
        nn.Linear(w, dim),
    )
    net = MLPField(MLPConfig(dim=dim, hidden=w, depth=3, time_embed_dim=0, activation="selu"))
    assert set(net.state_dict()) == {f"net.{k}" for k in ref.state_dict()}
    net.net.load_state_dict(ref.state_dict())
    x, t = torch.randn(7, dim), torch.rand(7)
    torch.testing.assert_close(net(x, t), ref(torch.cat([x, t[:, None]], dim=-1)))


@pytest.mark.parametrize(
    "activation, module", [("silu", nn.SiLU), ("relu", nn.ReLU), ("gelu", nn.GELU)]
)
def test_layout_depth_width_activation(activation, module):
    net = MLPField(MLPConfig(dim=2, hidden=256, depth=3, time_embed_dim=64, activation=activation))
    linears = [m for m in net.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2 + 64, 256),
        (256, 256),
        (256, 256),
        (256, 2),
    ]
    assert sum(isinstance(m, module) for m in net.net) == 3


def test_bad_inputs_raise_clear_errors():
    cond_net = MLPField(MLPConfig(dim=2, hidden=8, num_classes=3))
    x, t = torch.randn(2, 2), torch.rand(2)
    with pytest.raises(ValueError, match=r"label 4.*\[0, 3\]"):
        cond_net(x, t, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"label -1.*\[0, 3\]"):
        cond_net(x, t, torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer class labels"):
        cond_net(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="one label per example"):
        cond_net(x, t, torch.tensor([0, 1, 2]))
    plain = MLPField(MLPConfig(dim=2, hidden=8))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"3 features.*MLPConfig.dim=2"):
        plain(torch.randn(2, 3), t)
    with pytest.raises(ValueError, match=r"t has shape \(\)"):
        plain(x, torch.tensor(0.5))
    with pytest.raises(ValueError, match="MLPConfig.depth=0"):
        MLPField(MLPConfig(depth=0))
    with pytest.raises(ValueError, match="'tanh'"):
        MLPField(MLPConfig(activation="tanh"))


@pytest.mark.parametrize("time_embed_dim", [0, 16])
def test_two_time_inputs_each_change_the_output_and_shapes_are_checked(time_embed_dim):
    net = MLPField(MLPConfig(dim=2, hidden=16, time_embed_dim=time_embed_dim, n_times=2))
    x, s, t = torch.randn(4, 2), torch.rand(4), torch.rand(4)
    out = net(x, torch.stack([s, t], -1))
    assert (out - net(x, torch.stack([s, t + 0.3], -1))).abs().max() > 1e-4
    assert (out - net(x, torch.stack([s + 0.3, t], -1))).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"n_times=2.*\(4, 2\)"):
        net(x, t)

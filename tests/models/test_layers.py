import math

import pytest
import torch

import flowforge.models as models
from flowforge.models.layers import SinusoidalEmbedding, make_activation


def test_all_names_resolve():
    for name in models.__all__:
        assert getattr(models, name) is not None


def test_sinusoidal_embedding_closed_form(dtype):
    emb = SinusoidalEmbedding(6, max_period=100.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    f = 100.0 ** (-torch.arange(3, dtype=torch.float64) / 3)  # f_i = max_period^(-i / h)
    args = 1000.0 * t[:, None] * f
    expected = torch.cat([args.cos(), args.sin()], dim=-1)
    # in float32 the argument 1000 t f carries ~6e-5 absolute rounding error
    atol = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(emb(t.to(dtype)), expected.to(dtype), atol=atol, rtol=0)


def test_sinusoidal_embedding_odd_dim_pads_zero_and_keeps_dtype():
    out = SinusoidalEmbedding(5)(torch.rand(4, dtype=torch.float32))
    assert out.shape == (4, 5) and out.dtype == torch.float32
    assert (out[:, -1] == 0).all()
    # cos^2 + sin^2 = 1 for each frequency pair
    torch.testing.assert_close(
        out[:, :2].square() + out[:, 2:4].square(), torch.ones(4, 2, dtype=torch.float32)
    )


def test_sinusoidal_embedding_distinguishes_nearby_times():
    # scaling t by 1000 makes the fastest feature turn by 1 rad over dt = 1e-3
    emb = SinusoidalEmbedding(64)
    a, b = emb(torch.tensor([0.5])), emb(torch.tensor([0.501]))
    assert (a - b).abs().max() > 0.5 * (1 - math.cos(1.0))


def test_sinusoidal_embedding_no_state():
    assert len(SinusoidalEmbedding(8).state_dict()) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim=0"):
        SinusoidalEmbedding(0)
    with pytest.raises(ValueError, match="'tanh'"):
        make_activation("tanh")

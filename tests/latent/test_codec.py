"""LatentCodec and encode_dataset: exact round trips, fitted statistics, state_dict, errors."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flowforge.latent.autoencoder import AutoencoderConfig, ConvAutoencoder
from flowforge.latent.codec import LatentCodec, encode_dataset


class ChannelMix(nn.Module):
    """An invertible linear "autoencoder" mixing channels: z = A x + b per pixel, x = A^-1 (z - b).

    Returns a (mean, logvar) pair when ``logvar`` is given, so the codec's sampling path is used.
    """

    def __init__(self, channels: int, logvar: float | None = None, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(channels, channels, generator=g) + 2 * torch.eye(channels)
        self.register_buffer("A", A)
        self.register_buffer("b", torch.randn(channels, generator=g))
        self.logvar = logvar

    def encode(self, x):
        z = torch.einsum("dc,bc...->bd...", self.A, x)
        z = z + self.b.reshape(1, -1, *([1] * (x.dim() - 2)))
        if self.logvar is None:
            return z
        return z, torch.full_like(z, self.logvar)

    def decode(self, z):
        z = z - self.b.reshape(1, -1, *([1] * (z.dim() - 2)))
        return torch.einsum("dc,bc...->bd...", torch.linalg.inv(self.A), z)


def _codec(channels: int = 3, **kwargs) -> LatentCodec:
    g = torch.Generator().manual_seed(1)
    shift = torch.randn(channels, generator=g)
    scale = torch.rand(channels, generator=g) + 0.5
    return LatentCodec(ChannelMix(channels, **kwargs), shift, scale)


@pytest.mark.parametrize("shape", [(7, 3), (7, 3, 4, 5)])
def test_round_trip_is_exact_for_an_invertible_linear_autoencoder(shape):
    codec = _codec(3)
    x = torch.randn(*shape)
    z = codec.encode(x)
    view = (1, 3) + (1,) * (len(shape) - 2)
    by_hand = (codec.autoencoder.encode(x) - codec.shift.reshape(view)) * codec.scale.reshape(view)
    torch.testing.assert_close(z, by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(codec.decode(z), x, rtol=0, atol=1e-12)


def test_encode_samples_the_posterior():
    codec = _codec(2, logvar=2 * torch.tensor(0.3).log().item())  # posterior std 0.3
    x = torch.randn(4, 2, 3, 3)
    mean = codec.encode(x, sample=False)
    z = codec.encode(x, torch.Generator().manual_seed(0))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    # (z_raw - shift) * scale with z_raw = mean_raw + 0.3 eps.
    torch.testing.assert_close(z, mean + 0.3 * eps * codec.scale.reshape(1, 2, 1, 1))


def _check_standardised(z: torch.Tensor, dims: tuple[int, ...]) -> None:
    mean = z.mean(dim=dims)
    std = z.std(dim=dims, correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-5)
    torch.testing.assert_close(std, torch.ones_like(std), rtol=0, atol=1e-5)


def test_fit_standardises_each_channel():
    ae = ChannelMix(3)
    x = torch.randn(50, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.2]).reshape(1, 3, 1, 1) + 2.0
    codec = LatentCodec.fit(ae, x, batch_size=16)
    z_raw = ae.encode(x)
    torch.testing.assert_close(codec.shift, z_raw.mean((0, 2, 3)))
    torch.testing.assert_close(codec.scale, 1 / z_raw.std((0, 2, 3), correction=0))
    _check_standardised(codec.encode(x), (0, 2, 3))
    _check_standardised(encode_dataset(codec, x, batch_size=7), (0, 2, 3))


def test_fit_on_posterior_samples_reuses_the_same_noise():
    # fit and encode_dataset draw eps batch after batch; the same seed and batch_size give the
    # same samples, so the fitted data's latents are standardised exactly.
    ae = ConvAutoencoder(AutoencoderConfig(width=8, kl_weight=1e-2))
    x = torch.randn(40, 1, 16, 16)
    codec = LatentCodec.fit(ae, x, batch_size=16, generator=torch.Generator().manual_seed(2))
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    z = encode_dataset(codec, x, batch_size=16, generator=torch.Generator().manual_seed(2))
    _check_standardised(z, (0, 2, 3))
    z_mean = encode_dataset(codec, x, batch_size=16, sample=False)
    assert (z - z_mean).abs().max() > 1e-3  # the fit used samples, not the means


def test_fit_scalar_normalisation():
    ae = ChannelMix(2)
    x = torch.randn(60, 2) * torch.tensor([1.0, 3.0])
    codec = LatentCodec.fit(ae, x, per_channel=False)
    assert codec.shift[0] == codec.shift[1] and codec.scale[0] == codec.scale[1]
    z = codec.encode(x)
    torch.testing.assert_close(z.mean(), torch.tensor(0.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(z.std(correction=0), torch.tensor(1.0), rtol=0, atol=1e-12)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    ae = ConvAutoencoder(AutoencoderConfig(width=8))
    codec = LatentCodec.fit(ae, torch.randn(20, 1, 16, 16), generator=torch.Generator())
    save_file(codec.state_dict(), tmp_path / "codec.safetensors")
    fresh = LatentCodec(ConvAutoencoder(AutoencoderConfig(width=8)), torch.zeros(4), torch.ones(4))
    fresh.load_state_dict(load_file(tmp_path / "codec.safetensors"))
    assert {"shift", "scale"} <= set(codec.state_dict())
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(fresh.encode(x, sample=False), codec.encode(x, sample=False))
    z = torch.randn(3, 4, 4, 4)
    assert torch.equal(fresh.decode(z), codec.decode(z))


def test_latent_shape():
    ae = ConvAutoencoder(AutoencoderConfig(width=8, downsample=1, latent_channels=3))
    codec = LatentCodec(ae, torch.zeros(3), torch.ones(3))
    assert codec.latent_shape((1, 16, 16)) == (3, 8, 8)
    assert _codec(2).latent_shape((2,)) == (2,)


def test_decode_is_differentiable():
    codec = _codec(2)
    z = torch.randn(5, 2, requires_grad=True)
    codec.decode(z).sum().backward()
    # d/dz sum(A^-1 (z / scale + shift - b)) = (1^T A^-1) / scale
    expected = torch.linalg.inv(codec.autoencoder.A).sum(0) / codec.scale
    torch.testing.assert_close(z.grad, expected.expand(5, 2))


def test_encode_dataset_matches_one_batch_and_shows_progress(capsys):
    codec = _codec(3)
    x = torch.randn(10, 3, 2, 2)
    z = encode_dataset(codec, x, batch_size=3, progress=True)
    torch.testing.assert_close(z, codec.encode(x), rtol=0, atol=1e-12)
    assert "encode" in capsys.readouterr().err
    assert not z.requires_grad


def test_zero_variance_channel_is_named():
    class Collapsed(nn.Module):
        def encode(self, x):
            return torch.cat([x, torch.full_like(x, 0.5)], dim=1)  # channel 1 is constant

        def decode(self, z):
            return z[:, :1]

    with pytest.raises(ValueError, match="latent channel 1 has zero variance.*per_channel=False"):
        LatentCodec.fit(Collapsed(), torch.randn(30, 1, 2, 2))
    codec = LatentCodec.fit(Collapsed(), torch.randn(30, 1, 2, 2), per_channel=False)
    assert codec.channels == 2


def test_errors():
    ae = ChannelMix(2)
    with pytest.raises(TypeError, match=r"\(Linear\) has no encode\(\) method"):
        LatentCodec(nn.Linear(2, 2), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"scale is \(\); pass a 1-D tensor"):
        LatentCodec(ae, torch.zeros(2), torch.tensor(0.18215))
    with pytest.raises(ValueError, match="shift is float"):
        LatentCodec(ae, 0.0, torch.ones(2))
    with pytest.raises(ValueError, match=r"shift has shape \(3,\) but scale has shape \(2,\)"):
        LatentCodec(ae, torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"scale\[1\] = 0"):
        LatentCodec(ae, torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        LatentCodec(ae, torch.tensor([0.0, float("nan")]), torch.ones(2))
    codec = LatentCodec(ChannelMix(3), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"shape \(4, 3\) but the codec normalises 2 channels"):
        codec.encode(torch.randn(4, 3))
    with pytest.raises(ValueError, match="at least 2 examples"):
        LatentCodec.fit(ae, torch.randn(1, 2))
    with pytest.raises(ValueError, match="batch_size=0"):
        encode_dataset(codec, torch.randn(4, 3), batch_size=0)
    with pytest.raises(TypeError, match="pass a LatentCodec"):
        encode_dataset(ae, torch.randn(4, 2))

    class BadEncoder(nn.Module):
        def encode(self, x):
            return {"z": x}

        def decode(self, z):
            return z

    with pytest.raises(TypeError, match="encode returned dict"):
        LatentCodec(BadEncoder(), torch.zeros(2), torch.ones(2)).encode(torch.randn(3, 2))

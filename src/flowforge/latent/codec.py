"""A latent codec: a frozen autoencoder plus the per-channel normalisation of its latents.

A latent flow (LFM, latent diffusion) is trained on normalised latents and decoded back:

    z = (E(x) - shift) * scale          E(x) a posterior sample (or the mean)
    x = D(z / scale + shift)

``shift`` and ``scale`` are (C,) buffers, one value per latent channel (Stable Diffusion's single
s = 0.18215 is shift = 0, scale = 0.18215 on every channel). ``LatentCodec.fit`` sets them to the
mean and 1 / std of the data's raw latents, so the flow sees latents of zero mean and unit
variance per channel, matching its N(0, I) source at t = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.latent.autoencoder import _posterior_sample

__all__ = ["LatentCodec", "encode_dataset"]


def _raw_latent(
    autoencoder: nn.Module, x: Tensor, generator: torch.Generator | None, sample: bool
) -> Tensor:
    """E(x): a posterior sample (``sample=True``) or the mean, for an encoder returning a Tensor,
    a (mean, logvar) pair, or (mean, None) (deterministic)."""
    out = autoencoder.encode(x)
    if isinstance(out, Tensor):
        return out
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor)):
        raise TypeError(
            f"{type(autoencoder).__name__}.encode returned {type(out).__name__}; a codec needs "
            "encode(x) to return a latent Tensor or a (mean, logvar) pair."
        )
    mean, logvar = out
    return _posterior_sample(mean, logvar if sample else None, generator)


def _channel_view(v: Tensor, z: Tensor) -> Tensor:
    """A (C,) buffer reshaped to (1, C, 1, ..., 1) in z's dtype, to broadcast against z
    (B, C, ...): the latents keep their dtype whatever the buffers' dtype."""
    if z.dim() < 2 or z.shape[1] != v.shape[0]:
        raise ValueError(
            f"the latent has shape {tuple(z.shape)} but the codec normalises {v.shape[0]} "
            f"channels (dim 1); pass latents of shape (B, {v.shape[0]}, ...) or fit the codec "
            "on this autoencoder."
        )
    return v.to(z.dtype).reshape(1, -1, *([1] * (z.dim() - 2)))


class LatentCodec(nn.Module):
    """Encode images to normalised latents and decode them back through a frozen autoencoder.

    encode: z = (z_raw - shift) * scale, with z_raw a posterior sample mean + exp(logvar / 2) eps
    (LFM and latent diffusion train on samples, not means) or the mean / the encoder's Tensor;
    decode: x = D(z / scale + shift). Both are differentiable (not wrapped in ``no_grad``) and
    apply the buffers in the latents' dtype.
    ``shift`` and ``scale`` are buffers, so they travel with ``state_dict()`` (and safetensors).

    Args:
        autoencoder: any module with ``encode(x) -> Tensor | (mean, logvar)`` (logvar may be
            None) and ``decode(z) -> Tensor``, e.g. ``ConvAutoencoder``.
        shift: (C,) per-channel offset of the raw latents (their mean after ``fit``).
        scale: (C,) per-channel factor, nonzero (1 / std after ``fit``; 0.18215 in SD).

    References:
        Flow Matching in Latent Space (Dao et al., 2023), arXiv:2307.08698.
        High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022),
        arXiv:2112.10752 (the scale factor that gives the latents unit variance).

    Example:
        >>> class Double(nn.Module):
        ...     def encode(self, x): return 2 * x
        ...     def decode(self, z): return z / 2
        >>> codec = LatentCodec(Double(), shift=torch.zeros(2), scale=torch.full((2,), 0.5))
        >>> x = torch.tensor([[1.0, -3.0]])
        >>> codec.encode(x).tolist(), codec.decode(codec.encode(x)).tolist()
        ([[1.0, -3.0]], [[1.0, -3.0]])
    """

    def __init__(self, autoencoder: nn.Module, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        for name in ("encode", "decode"):
            if not callable(getattr(autoencoder, name, None)):
                raise TypeError(
                    f"autoencoder ({type(autoencoder).__name__}) has no {name}() method; pass a "
                    "module with encode(x) -> Tensor | (mean, logvar) and decode(z) -> Tensor."
                )
        for name, value in (("shift", shift), ("scale", scale)):
            if not isinstance(value, Tensor) or value.dim() != 1 or value.numel() < 1:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"{name} is {shape}; pass a 1-D tensor with one value per latent channel, "
                    f"e.g. torch.full((C,), {0.0 if name == 'shift' else 0.18215})."
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}={value.tolist()} holds non-finite values; pass finite.")
        if shift.shape != scale.shape:
            raise ValueError(
                f"shift has shape {tuple(shift.shape)} but scale has shape {tuple(scale.shape)}; "
                "pass one value of each per latent channel."
            )
        if (scale == 0).any():
            c = int((scale == 0).nonzero()[0, 0])
            raise ValueError(
                f"scale[{c}] = 0 would collapse latent channel {c}; pass a nonzero scale "
                "(1 / std of the raw latents, see LatentCodec.fit)."
            )
        self.autoencoder = autoencoder
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    @property
    def channels(self) -> int:
        """C, the number of latent channels the codec normalises."""
        return self.shift.shape[0]

    def encode(
        self, x: Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> Tensor:
        """Args: x: (B, ...) data; generator: random source of the posterior sample; sample:
        draw from the posterior (True) or take its mean (False; unused for a Tensor encoder).

        Returns: (B, C, ...) normalised latents (z_raw - shift) * scale.
        """
        z_raw = _raw_latent(self.autoencoder, x, generator, sample)
        return (z_raw - _channel_view(self.shift, z_raw)) * _channel_view(self.scale, z_raw)

    def decode(self, z: Tensor) -> Tensor:
        """Args: z: (B, C, ...) normalised latents. Returns: D(z / scale + shift), (B, ...)."""
        return self.autoencoder.decode(
            z / _channel_view(self.scale, z) + _channel_view(self.shift, z)
        )

    @torch.no_grad()
    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of one example's latent, found by encoding one zero example.

        Args: image_shape: the shape of one example, e.g. (C, H, W), without the batch.

        Returns: the latent shape without the batch, e.g. (4, 4, 4).
        """
        ref = next(iter(self.autoencoder.parameters()), self.shift)
        x = torch.zeros(1, *image_shape, device=ref.device, dtype=ref.dtype)
        return tuple(_raw_latent(self.autoencoder, x, None, sample=False).shape[1:])

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        autoencoder: nn.Module,
        x: Tensor,
        batch_size: int = 256,
        per_channel: bool = True,
        generator: torch.Generator | None = None,
        sample: bool = True,
        progress: bool = False,
    ) -> LatentCodec:
        """A codec whose latents of ``x`` have mean 0 and standard deviation 1.

        With raw latents z_raw of every example (posterior samples when ``sample``), per
        channel c (all other dims pooled): shift_c = mean(z_raw[:, c]), scale_c =
        1 / std(z_raw[:, c]) (population std, correction 0). With ``per_channel=False`` one
        mean and one std over all elements are broadcast to every channel. The autoencoder
        is frozen first (``requires_grad_(False)``, ``eval()``). Encoding the same ``x`` with a
        generator in the same state and the same ``batch_size`` (``encode_dataset``) draws the
        same posterior noise, so those latents have mean 0 and std 1 exactly (up to rounding).

        Args:
            autoencoder: as in ``LatentCodec``.
            x: (N, ...) data, N >= 2, on any device (batches move to the autoencoder's device).
            batch_size: examples encoded at once.
            per_channel: one (shift, scale) per channel, or one pair for all channels.
            generator: random source of the posterior samples.
            sample: fit on posterior samples (LFM) or on means.
            progress: show a tqdm progress bar.

        Returns:
            The fitted ``LatentCodec`` (its buffers on the latents' device and dtype).

        Example:
            >>> class Affine(nn.Module):
            ...     def encode(self, x): return 3 * x + 1
            ...     def decode(self, z): return (z - 1) / 3
            >>> x = torch.randn(100, 2)
            >>> codec = LatentCodec.fit(Affine(), x)
            >>> z = codec.encode(x)
            >>> z.mean(0).abs().max() < 1e-5, (z.std(0, correction=0) - 1).abs().max() < 1e-5
            (tensor(True), tensor(True))
        """
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x is {shape}; pass a batch of at least 2 examples (N, ...) to estimate the "
                "latents' mean and standard deviation."
            )
        autoencoder.requires_grad_(False).eval()
        z = _encode_batches(autoencoder, x, batch_size, generator, sample, progress)  # (N, C, ...)
        if z.dim() < 2:
            raise ValueError(f"the latents have shape {tuple(z.shape)}; expected (N, C, ...).")
        z64 = z.to(torch.float64)
        dims = [d for d in range(z.dim()) if d != 1] if per_channel else list(range(z.dim()))
        mean = z64.mean(dim=dims)
        std = z64.std(dim=dims, correction=0)
        C = z.shape[1]
        mean, std = mean.expand(C).clone(), std.expand(C).clone()
        # A spread below the dtype's resolution cannot be normalised (the channel is constant).
        tiny = torch.finfo(z.dtype).eps * mean.abs().clamp_min(1.0)
        bad = ~(std > tiny)
        if bad.any():
            c = int(bad.nonzero()[0, 0])
            where = f"latent channel {c}" if per_channel else "the latents"
            raise ValueError(
                f"{where} has zero variance over the {z.shape[0]} examples of x (std "
                f"{std[c].item():.3g}, mean {mean[c].item():.6g}), so 1 / std is undefined; "
                "fit on more varied data, retrain the autoencoder (a collapsed channel), or pass "
                "per_channel=False."
            )
        return cls(autoencoder, mean.to(z.dtype), (1.0 / std).to(z.dtype))


def _encode_batches(
    module: nn.Module,
    x: Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    sample: bool,
    progress: bool,
    codec: LatentCodec | None = None,
) -> Tensor:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; pass a positive integer (e.g. 256).")
    ref = next(iter(module.parameters()), None)
    if ref is None:
        ref = next(iter(module.buffers()), None)
    device = x.device if ref is None else ref.device
    starts = range(0, x.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encode", unit="batch")
    out = []
    for i in starts:
        x_b = x[i : i + batch_size].to(device)
        if codec is None:
            out.append(_raw_latent(module, x_b, generator, sample))
        else:
            out.append(codec.encode(x_b, generator, sample))
    return torch.cat(out)


@torch.no_grad()
def encode_dataset(
    codec: LatentCodec,
    x: Tensor,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    sample: bool = True,
    progress: bool = False,
) -> Tensor:
    """Normalised latents of a whole data set, encoded in batches without gradients.

    z_i = (E(x_i) - shift) * scale for every example; batches are moved to the codec's device.

    Args:
        codec: the ``LatentCodec``.
        x: (N, ...) data.
        batch_size: examples encoded at once.
        generator: random source of the posterior samples (drawn batch after batch).
        sample: posterior samples (True) or means.
        progress: show a tqdm progress bar.

    Returns:
        (N, C, ...) latents on the codec's device.

    Example:
        >>> class Identity(nn.Module):
        ...     def encode(self, x): return x
        ...     def decode(self, z): return z
        >>> codec = LatentCodec(Identity(), torch.zeros(3), torch.full((3,), 2.0))
        >>> encode_dataset(codec, torch.ones(5, 3), batch_size=2)[:, 0].tolist()
        [2.0, 2.0, 2.0, 2.0, 2.0]
    """
    if not isinstance(codec, LatentCodec):
        raise TypeError(
            f"codec is a {type(codec).__name__}; pass a LatentCodec (e.g. LatentCodec.fit(ae, x))."
        )
    return _encode_batches(codec, x, batch_size, generator, sample, progress, codec=codec)

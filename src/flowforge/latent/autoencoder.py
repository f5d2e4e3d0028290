"""A small convolutional (variational) autoencoder for images, and its training objective.

Full definition in one file, like nanoGPT's ``model.py``:

    encoder: conv_in -> per stage (``blocks`` ResBlocks, stride-2 conv), ``downsample`` times
             -> ``blocks`` ResBlocks -> GN, act, conv_out -> (mean, logvar)
    decoder: conv_in -> ``blocks`` ResBlocks -> per stage (nearest x2, conv, ``blocks``
             ResBlocks), ``downsample`` times -> GN, act, conv_out -> x_hat (no squashing)
    ResBlock: h + conv(act(GN(conv(act(GN(h))))))

An image (B, C, H, W) maps to a latent (B, latent_channels, H / 2^d, W / 2^d) with d =
``downsample``; every stage keeps ``width`` channels, so the model stays small and fast on a CPU.
With ``kl_weight > 0`` the encoder is Gaussian, q(z|x) = N(mean, diag(exp(logvar))), trained with
the beta-VAE objective ``AutoencoderLoss``; with ``kl_weight = 0`` it is a plain deterministic
autoencoder (the posterior is a point mass at the mean, ``logvar`` is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowforge.models.layers import ACTIVATIONS, Activation, make_activation
from flowforge.utils.tensor import randn_like_gen

__all__ = ["AutoencoderConfig", "AutoencoderLoss", "ConvAutoencoder", "gaussian_kl"]

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # Stable Diffusion's DiagonalGaussianDistribution clamp


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters of ``ConvAutoencoder``.

    Args:
        in_channels: C, channels of the images.
        image_size: H = W, side of the (square) images.
        latent_channels: channels of the latent.
        width: channels of every hidden convolution.
        downsample: d, number of stride-2 stages; the latent side is image_size / 2^d, so
            image_size must be divisible by 2^d.
        blocks: ResBlocks per stage (and in the middle); 0 keeps only the resampling convs.
        kl_weight: beta, the weight of KL(q(z|x) || N(0, I)) in ``AutoencoderLoss``; 0 builds a
            deterministic autoencoder whose encoder outputs the mean only.
        activation: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Example:
        >>> cfg = AutoencoderConfig(image_size=16, downsample=2, latent_channels=4)
        >>> cfg.latent_shape
        (4, 4, 4)
    """

    in_channels: int = 1
    image_size: int = 16
    latent_channels: int = 4
    width: int = 32
    downsample: int = 2
    blocks: int = 1
    kl_weight: float = 1e-4
    activation: Activation = "silu"

    def __post_init__(self) -> None:
        for name, low in (
            ("in_channels", 1),
            ("image_size", 1),
            ("latent_channels", 1),
            ("width", 1),
            ("downsample", 0),
            ("blocks", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"AutoencoderConfig.{name}={value!r} is not valid; pass an integer >= {low}."
                )
        factor = 2**self.downsample
        if self.image_size % factor:
            raise ValueError(
                f"AutoencoderConfig.image_size={self.image_size} is not divisible by "
                f"2**downsample = {factor} (downsample={self.downsample}); pick an image_size "
                f"that is a multiple of {factor} or fewer downsampling stages."
            )
        kl = self.kl_weight
        if isinstance(kl, bool) or not isinstance(kl, (int, float)) or not 0 <= kl < math.inf:
            raise ValueError(
                f"AutoencoderConfig.kl_weight={kl!r} is not valid; pass a finite number >= 0 "
                "(e.g. 1e-4; 0 gives a deterministic autoencoder)."
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"AutoencoderConfig.activation={self.activation!r} is not valid; choose one of "
                f"{list(ACTIVATIONS)}."
            )

    @property
    def latent_size(self) -> int:
        """h = w = image_size / 2^downsample, the side of the latent."""
        return self.image_size // 2**self.downsample

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, h, w), the shape of one example's latent."""
        return (self.latent_channels, self.latent_size, self.latent_size)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)  # 8 groups where channels allow


class _ResBlock(nn.Module):
    def __init__(self, channels: int, activation: Activation) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.act = make_activation(activation)

    def forward(self, h: Tensor) -> Tensor:
        r = self.conv1(self.act(self.norm1(h)))  # (B, C, H, W)
        return h + self.conv2(self.act(self.norm2(r)))


def _blocks(n: int, channels: int, activation: Activation) -> list[nn.Module]:
    return [_ResBlock(channels, activation) for _ in range(n)]


def _posterior_sample(
    mean: Tensor, logvar: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    """z = mean + exp(logvar / 2) eps, eps ~ N(0, I); the mean itself when logvar is None."""
    if logvar is None:
        return mean
    return mean + (0.5 * logvar).exp() * randn_like_gen(mean, generator)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per example, averaged over latent elements.

    KL = (1/n) sum_i (mean_i^2 + exp(logvar_i) - 1 - logvar_i) / 2 over the n = mean[0].numel()
    elements of one example (Kingma & Welling, Appendix B; a mean, not a sum, so that the weight
    does not depend on the latent size).

    Args:
        mean, logvar: (B, ...) the posterior's mean and log-variance.

    Returns:
        (B,) the per-element KL of each example.

    References:
        Auto-Encoding Variational Bayes (Kingma & Welling, 2014), arXiv:1312.6114, Appendix B.

    Example:
        >>> gaussian_kl(torch.ones(2, 3), torch.zeros(2, 3)).tolist()  # (1 + 1 - 1 - 0) / 2
        [0.5, 0.5]
    """
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).flatten(1).mean(1)  # (B,)


class ConvAutoencoder(nn.Module):
    """A convolutional (variational) autoencoder: images (B, C, H, W) <-> latents (B, c, h, w).

    Encoder E(x) = (mean, logvar), logvar clamped to [-30, 20]; the posterior sample is
    z = mean + exp(logvar / 2) eps, eps ~ N(0, I); decoder x_hat = D(z), unsquashed (data are
    in [-1, 1]). With ``config.kl_weight == 0`` the encoder has no log-variance head: ``encode``
    returns ``(mean, None)`` and z = mean.

    Args:
        config: the ``AutoencoderConfig``.

    References:
        Auto-Encoding Variational Bayes (Kingma & Welling, 2014), arXiv:1312.6114.
        High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022),
        arXiv:2112.10752 (the KL-regularised convolutional autoencoder of latent diffusion).

    Example:
        >>> ae = ConvAutoencoder(AutoencoderConfig(width=8))
        >>> mean, logvar = ae.encode(torch.zeros(2, 1, 16, 16))
        >>> tuple(mean.shape), tuple(ae.decode(mean).shape)
        ((2, 4, 4, 4), (2, 1, 16, 16))
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        if not isinstance(config, AutoencoderConfig):
            raise TypeError(
                f"config is a {type(config).__name__}; pass an AutoencoderConfig, e.g. "
                "ConvAutoencoder(AutoencoderConfig(image_size=16))."
            )
        c = self.config = config
        W, act, n = c.width, c.activation, c.blocks
        enc: list[nn.Module] = [nn.Conv2d(c.in_channels, W, 3, padding=1)]
        for _ in range(c.downsample):
            enc += _blocks(n, W, act) + [nn.Conv2d(W, W, 3, stride=2, padding=1)]  # H -> H/2
        enc += _blocks(n, W, act) + [_norm(W), make_activation(act)]
        out = 2 * c.latent_channels if c.kl_weight > 0 else c.latent_channels
        enc.append(nn.Conv2d(W, out, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, W, 3, padding=1)]
        dec += _blocks(n, W, act)
        for _ in range(c.downsample):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(W, W, 3, padding=1)]
            dec += _blocks(n, W, act)
        dec += [_norm(W), make_activation(act), nn.Conv2d(W, c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Args: x: (B, C, H, W) images.

        Returns: (mean, logvar), each (B, latent_channels, h, w); logvar in [-30, 20], or None
        for a deterministic autoencoder (``kl_weight == 0``).
        """
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the autoencoder was built for images of shape "
                f"(B, {want[0]}, {want[1]}, {want[2]}) (AutoencoderConfig.in_channels="
                f"{c.in_channels}, image_size={c.image_size}); resize the images or rebuild the "
                "autoencoder with matching in_channels and image_size."
            )
        h = self.encoder(x)  # (B, c or 2c, h, w)
        if c.kl_weight == 0:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: Tensor) -> Tensor:
        """Args: z: (B, latent_channels, h, w) latents. Returns: (B, C, H, W) reconstructions."""
        want = self.config.latent_shape
        if z.dim() != 4 or tuple(z.shape[1:]) != want:
            raise ValueError(
                f"z has shape {tuple(z.shape)} but the decoder takes latents of shape "
                f"(B, {want[0]}, {want[1]}, {want[2]}); pass latents from this autoencoder's "
                "encode() (or a latent model trained on them)."
            )
        return self.decoder(z)

    def sample_latent(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A posterior sample z = mean + exp(logvar / 2) eps, eps ~ N(0, I) (the mean if
        ``kl_weight == 0``).

        Args: x: (B, C, H, W) images; generator: random source of eps.

        Returns: (B, latent_channels, h, w).
        """
        return _posterior_sample(*self.encode(x), generator)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, return_posterior: bool = False
    ) -> Tensor | tuple[Tensor, Tensor, Tensor | None]:
        """Reconstruct x through a posterior sample: x_hat = D(mean + exp(logvar / 2) eps).

        Args:
            x: (B, C, H, W) images.
            generator: random source of eps.
            return_posterior: also return the posterior, so an objective needs one forward call
                (DDP synchronises gradients only through ``forward``).

        Returns:
            x_hat (B, C, H, W); with ``return_posterior`` the tuple (x_hat, mean, logvar), mean
            and logvar (B, latent_channels, h, w) (logvar None if ``kl_weight == 0``).
        """
        mean, logvar = self.encode(x)
        x_hat = self.decode(_posterior_sample(mean, logvar, generator))
        return (x_hat, mean, logvar) if return_posterior else x_hat


def _config_of(model: nn.Module) -> object:
    """The ``config`` of a model, looking through DDP's ``.module`` (torch.compile's wrapper
    already forwards attribute access to the original module)."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return getattr(model, "config", None)


class AutoencoderLoss:
    """Per-example (beta-)VAE objective: reconstruction MSE plus beta times the KL to N(0, I).

    L(x) = mean_pixels (D(z) - x)^2 + beta KL(q(z|x) || N(0, I)),  z ~ q(z|x),

    with the KL averaged over latent elements (``gaussian_kl``) and beta the model's
    ``config.kl_weight`` unless given here. Only ``model(x, generator, return_posterior=True)``
    is called, so the objective works unchanged on a DDP- or torch.compile-wrapped model.
    Matches the trainer's ``objective(model, x, cond, generator) -> (B,)``.

    Args:
        kl_weight: beta; None reads ``config.kl_weight`` from the model (or from ``model.module``
            under DDP).

    References:
        Auto-Encoding Variational Bayes (Kingma & Welling, 2014), arXiv:1312.6114.
        beta-VAE (Higgins et al., 2017), ICLR, https://openreview.net/forum?id=Sy2fzU9gl.

    Example:
        >>> ae = ConvAutoencoder(AutoencoderConfig(width=8))
        >>> loss = AutoencoderLoss()(ae, torch.zeros(3, 1, 16, 16), None, torch.Generator())
        >>> loss.shape
        torch.Size([3])
    """

    def __init__(self, kl_weight: float | None = None) -> None:
        if kl_weight is not None and not 0 <= kl_weight < math.inf:
            raise ValueError(
                f"kl_weight={kl_weight!r} is not valid; pass a finite number >= 0, or None to "
                "use the model's config.kl_weight."
            )
        self.kl_weight = kl_weight

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: a ``ConvAutoencoder`` (possibly wrapped); x: (B, C, H, W) images; cond:
        ignored (an autoencoder is unconditional; accepted for the trainer's signature);
        generator: random source of the posterior sample.

        Returns: (B,) per-example losses.
        """
        beta = self.kl_weight
        if beta is None:
            config = _config_of(model)
            if config is None or not hasattr(config, "kl_weight"):
                raise ValueError(
                    f"model ({type(model).__name__}) has no config.kl_weight; pass it to the "
                    "objective, AutoencoderLoss(kl_weight=...)."
                )
            beta = config.kl_weight
        x_hat, mean, logvar = model(x, generator, return_posterior=True)
        loss = (x_hat - x).square().flatten(1).mean(1)  # (B,)
        if beta == 0:
            return loss
        if logvar is None:
            raise ValueError(
                f"kl_weight={beta!r} but the model is deterministic (its encoder returns no "
                "logvar); pass kl_weight=0 or build the model with "
                "AutoencoderConfig.kl_weight > 0."
            )
        return loss + beta * gaussian_kl(mean, logvar)

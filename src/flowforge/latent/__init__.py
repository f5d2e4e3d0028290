"""Autoencoders and latent codecs: flows trained on the latents of a frozen autoencoder."""

from flowforge.latent.autoencoder import (
    AutoencoderConfig,
    AutoencoderLoss,
    ConvAutoencoder,
    gaussian_kl,
)
from flowforge.latent.codec import LatentCodec, encode_dataset

__all__ = [
    "AutoencoderConfig",
    "AutoencoderLoss",
    "ConvAutoencoder",
    "LatentCodec",
    "encode_dataset",
    "gaussian_kl",
]

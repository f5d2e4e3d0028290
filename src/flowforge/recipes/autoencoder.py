"""The autoencoder of latent flow matching (``method.name: autoencoder``).

A convolutional VAE (or a deterministic autoencoder with ``model.kl_weight=0``) on the run's
images; its sizes are the ``model.*`` autoencoder keys. It does not sample: a latent run
(``data.autoencoder=RUN``) trains a flow on its normalised latents. Evaluation reports the
held-out reconstruction error; the picture shows reconstructions.

References:
    Flow Matching in Latent Space (Dao et al., 2023), arXiv:2307.08698.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flowforge.latent.autoencoder import AutoencoderLoss
from flowforge.recipes import plots
from flowforge.recipes.base import Recipe, TrainContext, Training
from flowforge.recipes.config import ConfigError, MethodConfig, meta
from flowforge.recipes.images import ImageData, build_autoencoder

__all__ = ["AutoencoderMethodConfig", "AutoencoderRecipe"]


@dataclass
class AutoencoderMethodConfig(MethodConfig):
    """The autoencoder's section holds only its name: its sizes and KL weight are ``model.*``."""

    name: str = field(
        default="autoencoder", metadata=meta("the recipe: a convolutional autoencoder")
    )


class AutoencoderRecipe(Recipe):
    """Trains the codec of latent runs; reports reconstruction error instead of samples."""

    name = "autoencoder"
    Config = AutoencoderMethodConfig
    data_kinds = ("images",)
    labels = False
    autoencoder_arch = True
    samples = False

    def validate(self) -> None:
        """Images only, with nothing to condition on."""
        d = self.config.data
        if d.channels != "none" or d.conditional or d.autoencoder:
            raise ConfigError(
                "an autoencoder run learns images only; set data.channels=none, "
                "data.conditional=false and data.autoencoder=null."
            )

    def build_model(self, data: ImageData) -> nn.Module:
        """The ``ConvAutoencoder`` of the ``model.*`` autoencoder keys."""
        return build_autoencoder(self.config.model, data.image_shape)

    def training(self, model: nn.Module, data: ImageData, context: TrainContext) -> Training:
        """Per-example reconstruction MSE plus the weighted KL."""
        return Training(objective=AutoencoderLoss(), data=data.train)

    def sampler(self, model, data, sample, run_dir=None):
        """An autoencoder does not sample."""
        run = self.config.name if run_dir is None else str(run_dir)
        raise ValueError(
            f"{run} is an autoencoder run, which does not sample; train a latent run on it "
            f"(data.autoencoder={run!r}) and sample that."
        )

    def generate(self, model, data, sample, n, nfe, solver, generator, labels=None, run_dir=None):
        """An autoencoder does not sample."""
        self.sampler(model, data, sample, run_dir)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: ImageData, run_dir, step, progress=True) -> dict:
        """Held-out reconstruction error (posterior means decoded)."""
        errors = []
        for x in data.test_x.split(256):
            mean, _ = model.encode(x)
            errors.append((model.decode(mean) - x).square().flatten(1).mean(1))
        mse = torch.cat(errors)
        return {"step": step, "reconstruction_mse": float(mse.mean()), "n_test": len(mse)}

    def draw(self, model: nn.Module, data: ImageData, run_dir: Path | None, step) -> dict:
        """reconstructions.png: ten held-out images and their reconstructions."""
        x = data.test_x[:10]
        with torch.no_grad():
            recon = model.decode(model.encode(x)[0]).clamp(-1, 1)
        figure = plots.plot_image_rows(
            [x, recon],
            ["held-out", "reconstruction"],
            title=f"{self.config.name}, step {step}: held-out images and their reconstructions",
        )
        return {"reconstructions.png": figure}

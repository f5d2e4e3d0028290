"""Run configuration: one dataclass per section of a run, and the checks every run shares.

A run is ``RunConfig(name, threads, data, model, method, train, sample, eval)``. The ``method``
section belongs to a recipe: ``method.name`` picks it (``fm``, ``meanflow``, ...) and the recipe's
own dataclass holds the rest of the section (``flowforge.recipes.table``). Reading, overriding and
writing configs lives in ``flowforge.recipes.config_io``, the checks in
``flowforge.recipes.validation``.

Example:
    >>> cfg = RunConfig()
    >>> cfg.data.name, cfg.method.name, cfg.sample.solver
    ('eight_gaussians', 'fm', 'heun')
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flowforge.recipes.errors import ConfigError
from flowforge.train.config import TrainConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MethodConfig",
    "SampleConfig",
    "EvalConfig",
    "RunConfig",
    "TOY_DATASETS",
    "ENERGY_TARGETS",
    "EnergyName",
    "GFN_ENVS",
    "IMAGE_DATASETS",
    "VIDEO_DATASETS",
    "VIDEO_METRICS",
    "data_kind",
    "IMAGE_METRICS",
    "VECTOR_METRICS",
    "SHARED_IMAGE_METRICS",
    "ODE_SOLVERS",
    "is_image_run",
    "meta",
]

ToyName = Literal[
    "eight_gaussians", "moons", "circles", "swiss_roll", "checkerboard", "pinwheel", "spirals"
]
TOY_DATASETS: tuple[str, ...] = typing.get_args(ToyName)
ImageName = Literal["digits", "shapes"]
IMAGE_DATASETS: tuple[str, ...] = typing.get_args(ImageName)
VideoName = Literal["moving_shapes"]
VIDEO_DATASETS: tuple[str, ...] = typing.get_args(VideoName)
EnergyName = Literal["gmm40", "manywell32", "dw4", "lj13", "aldp"]
ENERGY_TARGETS: tuple[str, ...] = typing.get_args(EnergyName)
EnvName = Literal["hypergrid", "sets", "bits", "molecules"]
GFN_ENVS: tuple[str, ...] = typing.get_args(EnvName)
DataName = Literal[
    "eight_gaussians",
    "moons",
    "circles",
    "swiss_roll",
    "checkerboard",
    "pinwheel",
    "spirals",
    "digits",
    "shapes",
    "moving_shapes",
    "gmm40",
    "manywell32",
    "dw4",
    "lj13",
    "aldp",
    "hypergrid",
    "sets",
    "bits",
    "molecules",
]
MetricName = Literal[
    "w2",
    "sliced_w2",
    "mmd",
    "energy",
    "fd",
    "precision",
    "recall",
    "accuracy",
    "miou",
    "known_error",
    "motion",
]
VECTOR_METRICS: tuple[str, ...] = ("w2", "sliced_w2", "mmd", "energy")
IMAGE_METRICS: tuple[str, ...] = ("fd", "precision", "recall", "accuracy", "miou", "known_error")
VIDEO_METRICS: tuple[str, ...] = ("fd", "motion")
ODE_SOLVERS: tuple[str, ...] = ("euler", "midpoint", "heun", "rk4", "dopri5")
# image metrics of every sampling run; the others belong to recipes (Recipe.metrics)
SHARED_IMAGE_METRICS: tuple[str, ...] = ("fd", "precision", "recall", "accuracy", "known_error")


def meta(text: str, **extra: object) -> dict[str, object]:
    """A config field's metadata: its ``--help`` text (and e.g. ``choices``)."""
    return {"help": text, **extra}


def _recipe_names() -> list[str]:
    from flowforge.recipes.table import RECIPES  # the table imports every recipe: load late

    return list(RECIPES)


def _solver_names() -> list[str]:
    from flowforge.recipes.table import all_solvers

    return all_solvers()


@dataclass
class DataConfig:
    """Where training examples come from.

    A 2-D toy or an image set by name, a user's ``.csv`` / ``.npy`` array (one example per row)
    or folder of images via ``path``; optionally the latents of a trained autoencoder run.
    """

    name: DataName = field(
        default="eight_gaussians",
        metadata=meta(
            "2-D toy, image dataset (digits, shapes), videos (moving_shapes) or a Boltzmann "
            "target (gmm40, manywell32, dw4, lj13, aldp) or a GFlowNet environment (hypergrid, "
            "sets, bits; its settings are in the method section); ignored when path is set"
        ),
    )
    path: str | None = field(
        default=None,
        metadata=meta("a .csv/.npy array (one example per row) or a folder of images"),
    )
    image_size: int | None = field(
        default=None,
        metadata=meta(
            "image side: digits 8 or 16, shapes >= 8, folders resized to it (null: the data's "
            "own side; a folder's images must then share one size)"
        ),
    )
    image_channels: int | None = field(
        default=None,
        metadata=meta(
            "folders: convert every image to 1 (grayscale) or 3 (RGB) channels (null: keep "
            "their own, which must then agree)"
        ),
    )
    n_train: int = field(
        default=8192,
        metadata=meta(
            "shapes: images generated for training (held-out: 2048); moving_shapes: videos "
            "(held-out: 512); Boltzmann targets: samples for maximum likelihood and the "
            "coordinate scale"
        ),
    )
    frames: int = field(default=8, metadata=meta("moving_shapes: frames per video"))
    channels: Literal["none", "mask", "inpaint"] = field(
        default="none",
        metadata=meta(
            "images: condition channels; mask: one-hot segmentation (mask-to-image), inpaint: "
            "masked image + mask"
        ),
    )
    autoencoder: str | None = field(
        default=None,
        metadata=meta("run directory of a trained autoencoder: train on its latents (LFM)"),
    )
    conditional: bool = field(
        default=False,
        metadata=meta("train class-conditional on the labels (toy labels or label_column)"),
    )
    label_column: int | None = field(
        default=None,
        metadata=meta("column of an array file holding integer class labels (removed from x)"),
    )
    normalize: bool = field(
        default=True,
        metadata=meta("standardise array data per column; undone when sampling (toys: unused)"),
    )


@dataclass
class ModelConfig:
    """The network: an MLP (vectors), a UNet or DiT (images) or a convolutional autoencoder.

    Sizes that come from the data (dimension, channels, classes) are not set here.
    """

    arch: Literal["mlp", "unet", "dit", "autoencoder"] = field(
        default="mlp", metadata=meta("network architecture")
    )
    hidden: int = field(default=256, metadata=meta("mlp: hidden width; dit: token width"))
    depth: int = field(default=3, metadata=meta("mlp: hidden layers; dit: transformer blocks"))
    time_embed_dim: int = field(
        default=64, metadata=meta("sinusoidal time features (0: raw t as one input)")
    )
    class_embed_dim: int = field(
        default=32, metadata=meta("class embedding width (conditional runs only)")
    )
    activation: Literal["silu", "relu", "gelu", "selu"] = field(
        default="silu", metadata=meta("hidden activation")
    )
    base_channels: int = field(default=32, metadata=meta("unet/autoencoder: first-level width"))
    channel_mults: list[int] = field(
        default_factory=lambda: [1, 2], metadata=meta("unet: width multiplier per level")
    )
    attention: bool = field(default=True, metadata=meta("unet: self-attention in the middle"))
    time_scale: float = field(
        default=1000.0,
        metadata=meta("unet/dit: factor on t before the sinusoids (two-time nets: e.g. 1)"),
    )
    dropout: float = field(default=0.0, metadata=meta("unet: dropout in the ResBlocks"))
    patch_size: int = field(default=2, metadata=meta("dit: patch side"))
    heads: int = field(default=4, metadata=meta("dit: attention heads"))
    latent_channels: int = field(default=4, metadata=meta("autoencoder: latent channels"))
    downsample: int = field(
        default=2, metadata=meta("autoencoder: stride-2 stages (latent side = size / 2^k)")
    )
    kl_weight: float = field(
        default=1e-4, metadata=meta("autoencoder: KL weight (0: deterministic autoencoder)")
    )


@dataclass
class MethodConfig:
    """The ``method:`` section. ``name`` picks the recipe; each recipe's config extends this
    dataclass with its own keys (``FlowMatchingConfig``, ``MeanFlowConfig`` ...)."""

    name: str = field(
        default="fm",
        metadata=meta(
            "the recipe: what to train (`flowforge recipes` lists them)", choices=_recipe_names
        ),
    )


@dataclass
class SampleConfig:
    """How samples are drawn from a trained run."""

    solver: str = field(
        default="heun",
        metadata=meta(
            "ODE solver (euler, midpoint, heun, rk4, dopri5) or a recipe's own sampler (fewstep)",
            choices=_solver_names,
        ),
    )
    nfe: int = field(
        default=16,
        metadata=meta(
            "network evaluations; a multiple of the solver's per-step count (dopri5: "
            "adaptive, unused)"
        ),
    )
    n: int = field(default=2000, metadata=meta("number of samples"))
    time_shift: float = field(
        default=1.0, metadata=meta("SD3 shift of the sampling grid (>1: more steps near noise)")
    )
    guidance: float = field(
        default=1.0, metadata=meta("guidance scale w (1: none; conditional runs only)")
    )
    guidance_method: Literal["cfg", "raag"] = field(
        default="cfg", metadata=meta("cfg: constant scale; raag: ratio-aware adaptive scale")
    )
    raag_alpha: float = field(default=5.0, metadata=meta("raag: decay rate alpha"))
    atol: float = field(default=1e-5, metadata=meta("dopri5 absolute tolerance"))
    rtol: float = field(default=1e-5, metadata=meta("dopri5 relative tolerance"))
    seed: int = field(default=0, metadata=meta("random seed of the noise and labels"))


@dataclass
class EvalConfig:
    """Sample quality against fresh data at several NFEs, beside the finite-sample floor."""

    nfes: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        metadata=meta("NFE budgets (a solver skips budgets it cannot divide into steps)"),
    )
    solvers: list[str] = field(
        default_factory=lambda: ["euler", "midpoint", "heun"],
        metadata=meta(
            "solvers to compare (fixed-step ODE solvers, dopri5, or a recipe's own sampler)",
            choices=_solver_names,
        ),
    )
    dopri5: bool = field(
        default=True, metadata=meta("also evaluate adaptive dopri5 at the NFE it uses")
    )
    n_samples: int = field(default=2000, metadata=meta("generated and reference samples"))
    metrics: list[MetricName] = field(
        default_factory=lambda: ["w2", "sliced_w2", "mmd", "energy"],
        metadata=meta(
            "vectors: w2 (exact, POT), sliced_w2, mmd, energy; images: fd, precision, recall "
            "(classifier features), accuracy, miou (symmflow), known_error (inpaint); videos: "
            "fd (per frame), motion"
        ),
    )
    floor_repeats: int = field(
        default=3, metadata=meta("fresh-vs-fresh repeats averaged into each floor")
    )
    classifier_steps: int = field(
        default=1500, metadata=meta("images: training steps of the feature classifier")
    )
    seed: int = field(default=1234, metadata=meta("random seed of eval noise and references"))


def _default_method() -> MethodConfig:
    from flowforge.recipes.flow_matching import FlowMatchingConfig

    return FlowMatchingConfig()


@dataclass
class RunConfig:
    """Everything one run needs; written to ``<run>/config.yaml`` and reloaded on resume."""

    name: str = field(default="toy2d_fm", metadata=meta("run name: the folder under runs/"))
    threads: int | None = field(
        default=None,
        metadata=meta("CPU threads per process for torch (null: torch's default, one per core)"),
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=_default_method)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def data_kind(config: RunConfig) -> str:
    """``"vectors"``, ``"images"``, ``"videos"``, ``"energies"`` (a Boltzmann target) or
    ``"environments"`` (a GFlowNet environment): what a run trains on."""
    if is_image_run(config):
        return "images"
    if config.data.path is None and config.data.name in VIDEO_DATASETS:
        return "videos"
    if config.data.path is None and config.data.name in ENERGY_TARGETS:
        return "energies"
    if config.data.path is None and config.data.name in GFN_ENVS:
        return "environments"
    return "vectors"


def is_image_run(config: RunConfig) -> bool:
    """Whether a run trains on images (an image dataset or a folder of images)."""
    d = config.data
    if d.path is not None:
        return Path(d.path).is_dir()
    return d.name in IMAGE_DATASETS

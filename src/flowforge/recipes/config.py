"""Run configuration: one dataclass per section of a run, and the checks every run shares.

A run is ``RunConfig(name, threads, data, model, method, train, sample, eval)``. The ``method``
section belongs to a recipe: ``method.name`` picks it (``fm``, ``meanflow``, ...) and the recipe's
own dataclass holds the rest of the section (``flowforge.recipes.table``). Reading, overriding and
writing configs lives in ``flowforge.recipes.config_io``.

Example:
    >>> cfg = RunConfig()
    >>> cfg.data.name, cfg.method.name, cfg.sample.solver, validate(cfg) is cfg
    ('eight_gaussians', 'fm', 'heun', True)
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
    "IMAGE_DATASETS",
    "IMAGE_METRICS",
    "VECTOR_METRICS",
    "SHARED_IMAGE_METRICS",
    "ODE_SOLVERS",
    "validate",
    "is_image_run",
    "meta",
]

ToyName = Literal[
    "eight_gaussians", "moons", "circles", "swiss_roll", "checkerboard", "pinwheel", "spirals"
]
TOY_DATASETS: tuple[str, ...] = typing.get_args(ToyName)
ImageName = Literal["digits", "shapes"]
IMAGE_DATASETS: tuple[str, ...] = typing.get_args(ImageName)
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
]
VECTOR_METRICS: tuple[str, ...] = ("w2", "sliced_w2", "mmd", "energy")
IMAGE_METRICS: tuple[str, ...] = ("fd", "precision", "recall", "accuracy", "miou", "known_error")
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
        metadata=meta("2-D toy or image dataset (digits, shapes); ignored when path is set"),
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
    n_train: int = field(
        default=8192, metadata=meta("shapes: images generated for training (held-out: 2048)")
    )
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
            "(classifier features), accuracy, miou (symmflow), known_error (inpaint)"
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


def is_image_run(config: RunConfig) -> bool:
    """Whether a run trains on images (an image dataset or a folder of images)."""
    d = config.data
    if d.path is not None:
        return Path(d.path).is_dir()
    return d.name in IMAGE_DATASETS


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges and cross-field rules; return the config unchanged.

    The rules every run shares are here; the data rules of images and vectors and the sampling
    rules are checked against what the run's recipe supports, then the recipe checks its own
    section (``Recipe.validate``).

    Raises:
        ConfigError: naming the key, the value and a valid alternative.
    """
    from flowforge.recipes.table import recipe_for

    c = config
    positive = {
        "model.hidden": c.model.hidden,
        "model.depth": c.model.depth,
        "sample.n": c.sample.n,
        "eval.n_samples": c.eval.n_samples,
        "eval.floor_repeats": c.eval.floor_repeats,
        "sample.time_shift": c.sample.time_shift,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be positive.")
    if c.threads is not None and c.threads < 1:
        raise ConfigError(f"threads={c.threads!r} must be >= 1 (or null for torch's default).")
    if not c.name or "/" in c.name or c.name in (".", ".."):
        raise ConfigError(f"name={c.name!r} must be a plain folder name such as 'toy2d_fm'.")
    if c.sample.guidance < 0:
        raise ConfigError(f"sample.guidance={c.sample.guidance!r} must be >= 0 (1: no guidance).")
    if c.sample.guidance != 1.0 and not c.data.conditional:
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} needs a class-conditional run (trained with "
            "data.conditional=true); leave sample.guidance=1 for this one."
        )
    if not c.eval.nfes or any(n < 1 for n in c.eval.nfes):
        raise ConfigError(f"eval.nfes={c.eval.nfes!r} must be a non-empty list of NFEs >= 1.")
    if c.data.label_column is not None and c.data.path is None:
        raise ConfigError(
            f"data.label_column={c.data.label_column!r} applies to array files only; set "
            "data.path or drop data.label_column."
        )
    array = c.data.path is not None and not is_image_run(c)
    if array and c.data.conditional and c.data.label_column is None:
        raise ConfigError(
            "data.conditional=true with an array file needs data.label_column (the column of "
            "integer labels)."
        )
    recipe = recipe_for(c)
    _validate_data(c, recipe)
    recipe.validate()
    if is_image_run(c):
        _validate_image_conditions(c, recipe)
    if recipe.samples:
        _validate_sampling(c, recipe)
    return c


def _validate_data(c: RunConfig, recipe) -> None:
    """What the recipe trains on, the network family, and image settings on vectors."""
    d, m, name = c.data, c.model, recipe.name
    image = is_image_run(c)
    kind = "images" if image else "vectors"
    if kind not in recipe.data_kinds:
        use = (
            "an image dataset (data.name=digits or shapes, or data.path=FOLDER)"
            if "images" in recipe.data_kinds
            else "vector data (a 2-D toy, or data.path=FILE.csv)"
        )
        raise ConfigError(
            f"method.name={name!r} trains on {' or '.join(recipe.data_kinds)}, but the data "
            f"(data.name={d.name!r}, data.path={d.path!r}) are {kind}; use {use}."
        )
    if image and m.arch == "mlp":
        raise ConfigError(
            f"data.name={d.name!r} holds images but model.arch='mlp'; set model.arch=unet "
            "(or dit, or autoencoder with method.name=autoencoder)."
        )
    if not image and m.arch != "mlp":
        raise ConfigError(
            f"model.arch={m.arch!r} is for images but the data are vectors; use model.arch=mlp "
            "or an image dataset (data.name=digits or shapes, or data.path=FOLDER)."
        )
    if (m.arch == "autoencoder") != recipe.autoencoder_arch:
        raise ConfigError(
            f"method.name={name!r} and model.arch={m.arch!r} do not go together; an "
            "autoencoder is trained with method.name=autoencoder and model.arch=autoencoder."
        )
    if not image:
        bad = [n for n in c.eval.metrics if n in IMAGE_METRICS]
        if bad or d.channels != "none" or d.autoencoder is not None:
            raise ConfigError(
                "image settings on vector data: "
                + ", ".join(
                    [f"eval.metrics {bad}"] * bool(bad)
                    + [f"data.channels={d.channels!r}"] * (d.channels != "none")
                    + [f"data.autoencoder={d.autoencoder!r}"] * (d.autoencoder is not None)
                )
                + "; drop them or train on images."
            )
        return
    bad = [n for n in c.eval.metrics if n in VECTOR_METRICS]
    if bad and recipe.samples:  # a run that does not sample reports its own metrics
        raise ConfigError(
            f"eval.metrics contains {bad}, which are for vectors; image runs use "
            f"{list(IMAGE_METRICS)}."
        )
    if d.name == "digits" and d.path is None and d.image_size not in (None, 8, 16):
        raise ConfigError(f"data.image_size={d.image_size!r}: digits come in 8 or 16 pixels.")
    if d.image_size is not None and d.image_size < 8:
        raise ConfigError(f"data.image_size={d.image_size!r} must be >= 8.")


def _validate_image_conditions(c: RunConfig, recipe) -> None:
    """Condition channels, latents and the metrics that need them, against the recipe."""
    from flowforge.recipes.table import RECIPES

    d, name = c.data, recipe.name
    if d.channels == "mask" and (d.name != "shapes" or d.path is not None):
        raise ConfigError(
            f"data.channels={d.channels!r} runs need segmentation masks, which data.name=shapes "
            "provides; switch the dataset."
        )
    if d.channels != "none" and d.conditional:
        raise ConfigError(
            f"data.channels={d.channels!r} with data.conditional=true is not supported; "
            "condition on labels or on channels."
        )
    if d.channels not in recipe.channels:
        raise ConfigError(
            f"method.name={name!r} with data.channels={d.channels!r}: {name} image runs take "
            "class labels or nothing; set data.channels=none."
        )
    if d.autoencoder is not None and (not recipe.latent or d.channels != "none"):
        latent = "/".join(n for n, r in RECIPES.items() if r.latent)
        raise ConfigError(
            f"data.autoencoder={d.autoencoder!r} (latent flow matching) with "
            f"method.name={name!r} and data.channels={d.channels!r}: latent runs train "
            f"method.name={latent} with labels or unconditional (data.channels=none); set "
            "those, or drop data.autoencoder to train in pixel space."
        )
    if not recipe.samples:
        return
    if "accuracy" in c.eval.metrics and not d.conditional:
        raise ConfigError("eval.metrics 'accuracy' needs data.conditional=true (labels).")
    if "known_error" in c.eval.metrics and d.channels != "inpaint":
        raise ConfigError("eval.metrics 'known_error' needs data.channels=inpaint.")
    own = [n for n in c.eval.metrics if n in IMAGE_METRICS and n not in SHARED_IMAGE_METRICS]
    own = [n for n in own if n not in recipe.metrics]
    if own:
        owners = "/".join(n for n, r in RECIPES.items() if own[0] in r.metrics)
        raise ConfigError(
            f"eval.metrics {own[0]!r} is measured on method.name={owners} runs; drop it for "
            f"method.name={name!r}."
        )


def _validate_sampling(c: RunConfig, recipe) -> None:
    """``sample.solver``, ``eval.solvers``, ``sample.nfe`` and guidance against the recipe."""
    from flowforge.recipes.table import RECIPES

    name, solvers = recipe.name, recipe.solvers
    velocity = "dopri5" in solvers
    for key, names in {"sample.solver": [c.sample.solver], "eval.solvers": c.eval.solvers}.items():
        bad = [n for n in names if n not in solvers]
        if not bad:
            continue
        shown = names if len(names) > 1 else names[0]
        if bad[0] not in ODE_SOLVERS:  # another recipe's own sampler
            owners = [n for n, r in RECIPES.items() if bad[0] in r.solvers] or ["none"]
            uses = "ODE solvers such as heun" if velocity else ", ".join(solvers)
            raise ConfigError(
                f"{key} names {bad[0]!r}, the sampler of method.name={'/'.join(owners)}; a "
                f"{name} run uses {uses}."
            )
        own = [s for s in solvers if s not in ODE_SOLVERS] or list(solvers)
        fix = own[0] if key == "sample.solver" else "[" + ",".join(own) + "]"
        if own[0] in ODE_SOLVERS:  # a subset of the ODE solvers
            raise ConfigError(
                f"{key}={shown!r}: {name} runs sample with {', '.join(solvers)}; set {key}={fix}."
            )
        raise ConfigError(
            f"{key}={shown!r}: a {name} network is not a velocity field, so it samples with its "
            f"own sampler; set {key}={fix}."
        )
    if c.eval.dopri5 and not velocity:
        raise ConfigError(f"eval.dopri5=true needs a velocity field; set it false for {name}.")
    recipe.check_nfe("sample.nfe", c.sample.solver, c.sample.nfe)
    if c.sample.guidance != 1.0 and c.sample.solver not in recipe.guided_solvers:
        what = "the few-step samplers" if c.sample.solver == "fewstep" else c.sample.solver
        also = " (or sample with an ODE solver such as heun, which applies CFG)" * velocity
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} with sample.solver={c.sample.solver}: "
            f"{what} apply no guidance at sampling time; set sample.guidance=1{also}."
        )

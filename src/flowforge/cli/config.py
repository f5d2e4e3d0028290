"""Run configuration: one dataclass per component of a run, and its validation.

A run is described by ``RunConfig(name, data, model, method, train, sample, eval)``; reading,
overriding and writing configs lives in ``flowforge.cli.config_io``.

Example:
    >>> cfg = RunConfig()
    >>> cfg.data.name, cfg.sample.solver, validate(cfg) is cfg
    ('eight_gaussians', 'heun', True)
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flowforge.cli.distill_config import (
    FEW_STEP_OBJECTIVES,
    NATIVE_ONLY_OBJECTIVES,
    DistillConfig,
    validate_distill,
)
from flowforge.cli.errors import ConfigError
from flowforge.solvers.ode import NFE_PER_STEP
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
    "FIXED_SOLVERS",
    "validate",
    "is_image_run",
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
PathName = Literal["cond_ot", "cosine", "vp", "polynomial"]
TimeSamplerName = Literal["uniform", "logit_normal", "mode", "cosmap", "u_shaped"]
CouplingName = Literal["independent", "exact_ot", "sinkhorn"]
SolverName = Literal["euler", "midpoint", "heun", "rk4", "dopri5", "fewstep"]
FixedSolverName = Literal["euler", "midpoint", "heun", "rk4", "fewstep"]
FIXED_SOLVERS: tuple[str, ...] = tuple(  # the ODE solvers ("fewstep" is a method's own)
    s for s in typing.get_args(FixedSolverName) if s != "fewstep"
)
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
IMAGE_METRICS: tuple[str, ...] = ("fd", "precision", "recall", "accuracy", "miou", "known_error")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class DataConfig:
    """Where training examples come from.

    A 2-D toy or an image set by name, a user's ``.csv`` / ``.npy`` array (one example per row)
    or folder of images via ``path``; optionally the latents of a trained autoencoder run.
    """

    name: DataName = field(
        default="eight_gaussians",
        metadata=_help("2-D toy or image dataset (digits, shapes); ignored when path is set"),
    )
    path: str | None = field(
        default=None,
        metadata=_help("a .csv/.npy array (one example per row) or a folder of images"),
    )
    image_size: int | None = field(
        default=None,
        metadata=_help(
            "image side: digits 8 or 16, shapes >= 8, folders resized to it (null: the data's "
            "own side; a folder's images must then share one size)"
        ),
    )
    n_train: int = field(
        default=8192, metadata=_help("shapes: images generated for training (held-out: 2048)")
    )
    channels: Literal["none", "mask", "inpaint"] = field(
        default="none",
        metadata=_help(
            "images: condition channels; mask: one-hot segmentation (mask-to-image), inpaint: "
            "masked image + mask"
        ),
    )
    autoencoder: str | None = field(
        default=None,
        metadata=_help("run directory of a trained autoencoder: train on its latents (LFM)"),
    )
    conditional: bool = field(
        default=False,
        metadata=_help("train class-conditional on the labels (toy labels or label_column)"),
    )
    label_column: int | None = field(
        default=None,
        metadata=_help("column of an array file holding integer class labels (removed from x)"),
    )
    normalize: bool = field(
        default=True,
        metadata=_help("standardise array data per column; undone when sampling (toys: unused)"),
    )


@dataclass
class ModelConfig:
    """The network: an MLP (vectors), a UNet or DiT (images) or a convolutional autoencoder.

    Sizes that come from the data (dimension, channels, classes) are not set here.
    """

    arch: Literal["mlp", "unet", "dit", "autoencoder"] = field(
        default="mlp", metadata=_help("network architecture")
    )
    hidden: int = field(default=256, metadata=_help("mlp: hidden width; dit: token width"))
    depth: int = field(default=3, metadata=_help("mlp: hidden layers; dit: transformer blocks"))
    time_embed_dim: int = field(
        default=64, metadata=_help("sinusoidal time features (0: raw t as one input)")
    )
    class_embed_dim: int = field(
        default=32, metadata=_help("class embedding width (conditional runs only)")
    )
    activation: Literal["silu", "relu", "gelu", "selu"] = field(
        default="silu", metadata=_help("hidden activation")
    )
    base_channels: int = field(default=32, metadata=_help("unet/autoencoder: first-level width"))
    channel_mults: list[int] = field(
        default_factory=lambda: [1, 2], metadata=_help("unet: width multiplier per level")
    )
    attention: bool = field(default=True, metadata=_help("unet: self-attention in the middle"))
    time_scale: float = field(
        default=1000.0,
        metadata=_help("unet/dit: factor on t before the sinusoids (two-time nets: e.g. 1)"),
    )
    dropout: float = field(default=0.0, metadata=_help("unet: dropout in the ResBlocks"))
    patch_size: int = field(default=2, metadata=_help("dit: patch side"))
    heads: int = field(default=4, metadata=_help("dit: attention heads"))
    latent_channels: int = field(default=4, metadata=_help("autoencoder: latent channels"))
    downsample: int = field(
        default=2, metadata=_help("autoencoder: stride-2 stages (latent side = size / 2^k)")
    )
    kl_weight: float = field(
        default=1e-4, metadata=_help("autoencoder: KL weight (0: deterministic autoencoder)")
    )


@dataclass
class MethodConfig:
    """The objective: flow matching (path, time density, coupling, distance, condition dropout),
    SymmFlow (joint image/mask flows) or an autoencoder's reconstruction loss."""

    objective: Literal[
        "fm",
        "symmflow",
        "autoencoder",
        "reflow",
        "meanflow",
        "freeflow",
        "twinflow",
        "flowturbo",
        "blockwise",
    ] = field(default="fm", metadata=_help("what to train (few-step methods: see distill.*)"))
    path: PathName = field(default="cond_ot", metadata=_help("probability path x_t"))
    poly_n: float = field(default=2.0, metadata=_help("exponent of the polynomial path"))
    vp_beta_min: float = field(default=0.1, metadata=_help("VP path beta_min"))
    vp_beta_max: float = field(default=20.0, metadata=_help("VP path beta_max"))
    time_sampler: TimeSamplerName = field(
        default="uniform", metadata=_help("training-time density pi(t)")
    )
    logit_loc: float = field(
        default=0.0, metadata=_help("logit_normal: mean of logit t (>0 favours data)")
    )
    logit_scale: float = field(default=1.0, metadata=_help("logit_normal: std of logit t"))
    mode_scale: float = field(default=1.29, metadata=_help("mode: heavy-tail scale s"))
    u_a: float = field(default=4.0, metadata=_help("u_shaped: concentration a"))
    time_shift: float = field(
        default=1.0, metadata=_help("SD3 shift of training times (>1 favours noise; 1: none)")
    )
    coupling: CouplingName = field(
        default="independent", metadata=_help("how noise and data are paired per minibatch")
    )
    sinkhorn_reg: float = field(
        default=0.05, metadata=_help("sinkhorn: entropic regularisation (relative)")
    )
    distance: Literal["mse", "pseudo_huber"] = field(
        default="mse", metadata=_help("regression distance")
    )
    huber_c: float | None = field(
        default=None, metadata=_help("pseudo_huber scale (None: 0.00054 * dim)")
    )
    cond_dropout: float = field(
        default=0.1, metadata=_help("probability of dropping the label (conditional runs; CFG)")
    )
    inpaint_p_full: float = field(
        default=0.1,
        metadata=_help("inpaint: share of examples with nothing known (unconditional)"),
    )
    image_weight: float = field(
        default=0.9, metadata=_help("symmflow: weight of the image half of the loss")
    )
    dequant_beta: float = field(
        default=15.0, metadata=_help("symmflow: mask dequantisation noise (in 1/127.5 units)")
    )


@dataclass
class SampleConfig:
    """How samples are drawn from a trained run."""

    solver: SolverName = field(default="heun", metadata=_help("ODE solver"))
    nfe: int = field(
        default=16,
        metadata=_help(
            "network evaluations; a multiple of the solver's per-step count (dopri5: "
            "adaptive, unused)"
        ),
    )
    n: int = field(default=2000, metadata=_help("number of samples"))
    time_shift: float = field(
        default=1.0, metadata=_help("SD3 shift of the sampling grid (>1: more steps near noise)")
    )
    guidance: float = field(
        default=1.0, metadata=_help("guidance scale w (1: none; conditional runs only)")
    )
    guidance_method: Literal["cfg", "raag"] = field(
        default="cfg", metadata=_help("cfg: constant scale; raag: ratio-aware adaptive scale")
    )
    raag_alpha: float = field(default=5.0, metadata=_help("raag: decay rate alpha"))
    atol: float = field(default=1e-5, metadata=_help("dopri5 absolute tolerance"))
    rtol: float = field(default=1e-5, metadata=_help("dopri5 relative tolerance"))
    seed: int = field(default=0, metadata=_help("random seed of the noise and labels"))


@dataclass
class EvalConfig:
    """Sample quality against fresh data at several NFEs, beside the finite-sample floor."""

    nfes: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        metadata=_help("NFE budgets (a solver skips budgets it cannot divide into steps)"),
    )
    solvers: list[FixedSolverName] = field(
        default_factory=lambda: ["euler", "midpoint", "heun"],
        metadata=_help("fixed-step solvers to compare"),
    )
    dopri5: bool = field(
        default=True, metadata=_help("also evaluate adaptive dopri5 at the NFE it uses")
    )
    n_samples: int = field(default=2000, metadata=_help("generated and reference samples"))
    metrics: list[MetricName] = field(
        default_factory=lambda: ["w2", "sliced_w2", "mmd", "energy"],
        metadata=_help(
            "vectors: w2 (exact, POT), sliced_w2, mmd, energy; images: fd, precision, recall "
            "(classifier features), accuracy, miou (symmflow), known_error (inpaint)"
        ),
    )
    floor_repeats: int = field(
        default=3, metadata=_help("fresh-vs-fresh repeats averaged into each floor")
    )
    classifier_steps: int = field(
        default=1500, metadata=_help("images: training steps of the feature classifier")
    )
    seed: int = field(default=1234, metadata=_help("random seed of eval noise and references"))


@dataclass
class RunConfig:
    """Everything one run needs; written to ``<run>/config.yaml`` and reloaded on resume."""

    name: str = field(default="toy2d_fm", metadata=_help("run name: the folder under runs/"))
    threads: int | None = field(
        default=None,
        metadata=_help("CPU threads per process for torch (null: torch's default, one per core)"),
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges and cross-field rules; return the config unchanged.

    Raises:
        ConfigError: naming the key, the value and a valid alternative.
    """
    c = config
    positive = {
        "model.hidden": c.model.hidden,
        "model.depth": c.model.depth,
        "sample.n": c.sample.n,
        "eval.n_samples": c.eval.n_samples,
        "eval.floor_repeats": c.eval.floor_repeats,
        "method.time_shift": c.method.time_shift,
        "sample.time_shift": c.sample.time_shift,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be positive.")
    if c.threads is not None and c.threads < 1:
        raise ConfigError(f"threads={c.threads!r} must be >= 1 (or null for torch's default).")
    if not c.name or "/" in c.name or c.name in (".", ".."):
        raise ConfigError(f"name={c.name!r} must be a plain folder name such as 'toy2d_fm'.")
    if not 0 <= c.method.cond_dropout < 1:
        raise ConfigError(
            f"method.cond_dropout={c.method.cond_dropout!r} must lie in [0, 1) (0.1 is usual)."
        )
    if c.sample.guidance < 0:
        raise ConfigError(f"sample.guidance={c.sample.guidance!r} must be >= 0 (1: no guidance).")
    if c.sample.guidance != 1.0 and not c.data.conditional:
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} needs a class-conditional run (trained with "
            "data.conditional=true); leave sample.guidance=1 for this one."
        )
    check_nfe("sample.nfe", c.sample.solver, c.sample.nfe)
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
    _validate_images(c)
    validate_distill(c.method.objective, c.distill, is_image_run(c), c.data.channels)
    obj, few = c.method.objective, c.method.objective in FEW_STEP_OBJECTIVES
    solvers = {"sample.solver": [c.sample.solver], "eval.solvers": c.eval.solvers}
    for key, names in solvers.items():
        if obj in NATIVE_ONLY_OBJECTIVES and any(n != "fewstep" for n in names):
            raise ConfigError(
                f"{key}={names if len(names) > 1 else names[0]!r}: a {obj} network is not a "
                "velocity field, so it samples with its own few-step sampler; set "
                f"{key}={'fewstep' if key == 'sample.solver' else '[fewstep]'}."
            )
        if "fewstep" in names and not few:
            raise ConfigError(
                f"{key} names 'fewstep', the sampler of the few-step methods (method.objective="
                f"{'/'.join(FEW_STEP_OBJECTIVES)}); a {obj} run uses ODE solvers such as heun."
            )
    if c.sample.solver == "fewstep" and c.sample.guidance != 1.0:
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} with sample.solver=fewstep: the few-step "
            "samplers apply no guidance at sampling time; set sample.guidance=1 (or sample a "
            "reflow/blockwise run with an ODE solver, which applies CFG)."
        )
    if c.eval.dopri5 and obj in NATIVE_ONLY_OBJECTIVES:
        raise ConfigError(f"eval.dopri5=true needs a velocity field; set it false for {obj}.")
    return c


def is_image_run(config: RunConfig) -> bool:
    """Whether a run trains on images (an image dataset or a folder of images)."""
    d = config.data
    if d.path is not None:
        return Path(d.path).is_dir()
    return d.name in IMAGE_DATASETS


def _validate_images(c: RunConfig) -> None:
    d, m, obj = c.data, c.model, c.method.objective
    image = is_image_run(c)
    if image and m.arch == "mlp":
        raise ConfigError(
            f"data.name={d.name!r} holds images but model.arch='mlp'; set model.arch=unet "
            "(or dit, or autoencoder with method.objective=autoencoder)."
        )
    if not image and m.arch != "mlp":
        raise ConfigError(
            f"model.arch={m.arch!r} is for images but the data are vectors; use model.arch=mlp "
            "or an image dataset (data.name=digits or shapes, or data.path=FOLDER)."
        )
    if (obj == "autoencoder") != (m.arch == "autoencoder"):
        raise ConfigError(
            f"method.objective={obj!r} and model.arch={m.arch!r} do not go together; an "
            "autoencoder is trained with method.objective=autoencoder and model.arch=autoencoder."
        )
    if not image:
        bad = [name for name in c.eval.metrics if name in IMAGE_METRICS]
        if bad or d.channels != "none" or d.autoencoder is not None or obj == "symmflow":
            raise ConfigError(
                "image settings on vector data: "
                + ", ".join(
                    [f"eval.metrics {bad}"] * bool(bad)
                    + [f"data.channels={d.channels!r}"] * (d.channels != "none")
                    + [f"data.autoencoder={d.autoencoder!r}"] * (d.autoencoder is not None)
                    + ["method.objective='symmflow'"] * (obj == "symmflow")
                )
                + "; drop them or train on images."
            )
        return
    bad = [name for name in c.eval.metrics if name not in IMAGE_METRICS]
    if bad and obj != "autoencoder":  # an autoencoder run reports its reconstruction error
        raise ConfigError(
            f"eval.metrics contains {bad}, which are for vectors; image runs use "
            f"{list(IMAGE_METRICS)}."
        )
    if d.name == "digits" and d.path is None and d.image_size not in (None, 8, 16):
        raise ConfigError(f"data.image_size={d.image_size!r}: digits come in 8 or 16 pixels.")
    if d.image_size is not None and d.image_size < 8:
        raise ConfigError(f"data.image_size={d.image_size!r} must be >= 8.")
    needs_masks = d.channels == "mask" or obj == "symmflow"
    if needs_masks and (d.name != "shapes" or d.path is not None):
        raise ConfigError(
            f"data.channels={d.channels!r} / method.objective={obj!r} need segmentation masks, "
            "which data.name=shapes provides; switch the dataset."
        )
    if obj == "symmflow" and (d.channels != "none" or d.conditional):
        raise ConfigError(
            "method.objective=symmflow models images and masks jointly; set data.channels=none "
            "and data.conditional=false."
        )
    if d.channels != "none" and d.conditional:
        raise ConfigError(
            f"data.channels={d.channels!r} with data.conditional=true is not supported; "
            "condition on labels or on channels."
        )
    if obj == "autoencoder" and (d.channels != "none" or d.conditional or d.autoencoder):
        raise ConfigError(
            "an autoencoder run learns images only; set data.channels=none, "
            "data.conditional=false and data.autoencoder=null."
        )
    if d.autoencoder is not None and (d.channels != "none" or obj != "fm"):
        raise ConfigError(
            f"data.autoencoder={d.autoencoder!r} (latent flow matching) with "
            f"method.objective={obj!r} and data.channels={d.channels!r}: latent runs train "
            "method.objective=fm with labels or unconditional (data.channels=none); set those, "
            "or drop data.autoencoder to train in pixel space."
        )
    if "accuracy" in c.eval.metrics and not d.conditional:
        raise ConfigError("eval.metrics 'accuracy' needs data.conditional=true (labels).")
    if "miou" in c.eval.metrics and obj != "symmflow":
        raise ConfigError("eval.metrics 'miou' is measured on method.objective=symmflow runs.")
    if "known_error" in c.eval.metrics and d.channels != "inpaint":
        raise ConfigError("eval.metrics 'known_error' needs data.channels=inpaint.")
    if not 0 <= c.method.image_weight <= 1 or not 0 <= c.method.inpaint_p_full <= 1:
        raise ConfigError(
            f"method.image_weight={c.method.image_weight!r} and method.inpaint_p_full="
            f"{c.method.inpaint_p_full!r} must lie in [0, 1]."
        )


def check_nfe(key: str, solver: str, nfe: int) -> int:
    """Steps for ``nfe`` evaluations of ``solver``; ``ConfigError`` if it does not divide.

    Example:
        >>> check_nfe("sample.nfe", "heun", 8)
        4
    """
    if solver == "dopri5":
        return 0
    if solver == "fewstep":
        if nfe < 1:
            raise ConfigError(f"{key}={nfe!r} must be >= 1 (network evaluations).")
        return nfe
    per_step = NFE_PER_STEP[solver]
    if nfe < per_step or nfe % per_step:
        valid = [per_step * k for k in range(1, 6)]
        raise ConfigError(
            f"{key}={nfe!r} is not a multiple of the {per_step} evaluations per step of solver "
            f"{solver!r}; use one of {valid}..."
        )
    return nfe // per_step

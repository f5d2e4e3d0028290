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
from typing import Literal

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
    "FIXED_SOLVERS",
    "validate",
]

ToyName = Literal[
    "eight_gaussians", "moons", "circles", "swiss_roll", "checkerboard", "pinwheel", "spirals"
]
TOY_DATASETS: tuple[str, ...] = typing.get_args(ToyName)
PathName = Literal["cond_ot", "cosine", "vp", "polynomial"]
TimeSamplerName = Literal["uniform", "logit_normal", "mode", "cosmap", "u_shaped"]
CouplingName = Literal["independent", "exact_ot", "sinkhorn"]
SolverName = Literal["euler", "midpoint", "heun", "rk4", "dopri5"]
FixedSolverName = Literal["euler", "midpoint", "heun", "rk4"]
FIXED_SOLVERS: tuple[str, ...] = typing.get_args(FixedSolverName)
MetricName = Literal["w2", "sliced_w2", "mmd", "energy"]


class ConfigError(ValueError):
    """A user's configuration is invalid; the message names the key, the value and the fix."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class DataConfig:
    """Where training examples come from.

    A 2-D toy by name, or a user's ``.csv`` / ``.npy`` array (one example per row) via ``path``.
    """

    name: ToyName = field(
        default="eight_gaussians", metadata=_help("2-D toy dataset (ignored when path is set)")
    )
    path: str | None = field(
        default=None, metadata=_help("a .csv or .npy array, one example per row (replaces name)")
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
    """The MLP velocity field (``flowforge.models.MLPConfig`` less dim/num_classes, from data)."""

    hidden: int = field(default=256, metadata=_help("width of each hidden layer"))
    depth: int = field(default=3, metadata=_help("number of hidden layers"))
    time_embed_dim: int = field(
        default=64, metadata=_help("sinusoidal time features (0: raw t as one input)")
    )
    class_embed_dim: int = field(
        default=32, metadata=_help("class embedding width (conditional runs only)")
    )
    activation: Literal["silu", "relu", "gelu", "selu"] = field(
        default="silu", metadata=_help("hidden activation")
    )


@dataclass
class MethodConfig:
    """The flow-matching objective: path, time density, coupling, distance, condition dropout."""

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
        metadata=_help("metrics to compute (w2 exact via POT; sliced_w2 with 512 projections)"),
    )
    floor_repeats: int = field(
        default=3, metadata=_help("fresh-vs-fresh repeats averaged into each floor")
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
    if c.data.path is not None and c.data.conditional and c.data.label_column is None:
        raise ConfigError(
            "data.conditional=true with an array file needs data.label_column (the column of "
            "integer labels)."
        )
    return c


def check_nfe(key: str, solver: str, nfe: int) -> int:
    """Steps for ``nfe`` evaluations of ``solver``; ``ConfigError`` if it does not divide.

    Example:
        >>> check_nfe("sample.nfe", "heun", 8)
        4
    """
    if solver == "dopri5":
        return 0
    per_step = NFE_PER_STEP[solver]
    if nfe < per_step or nfe % per_step:
        valid = [per_step * k for k in range(1, 6)]
        raise ConfigError(
            f"{key}={nfe!r} is not a multiple of the {per_step} evaluations per step of solver "
            f"{solver!r}; use one of {valid}..."
        )
    return nfe // per_step

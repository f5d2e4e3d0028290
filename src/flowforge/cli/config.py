"""Run configuration: one dataclass per component, YAML presets, dotted type-checked overrides.

A run is described by ``RunConfig(name, data, model, method, train, sample, eval)``. Presets are
YAML files holding only the keys that differ from the defaults; ``--train.steps=2000`` style
overrides are checked against the field types (``int``, ``float``, ``bool``, ``str``,
``Literal``, ``list[...]``, ``X | None``). Unknown keys, wrong types and invalid choices raise
``ConfigError`` (a ``ValueError``) naming the key, the value and the valid options.

Example:
    >>> cfg = apply_overrides(RunConfig(), ["--train.steps=100", "--sample.solver=euler"])
    >>> cfg.train.steps, cfg.sample.solver
    (100, 'euler')
    >>> from_dict(to_dict(cfg)) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

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
    "apply_overrides",
    "config_keys",
    "from_dict",
    "to_dict",
    "load_yaml",
    "save_yaml",
    "list_presets",
    "preset_path",
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


# ---------------------------------------------------------------------------------------------
# Typed conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)} (e.g. [1,2,4] or 1,2,4)"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a command line) to ``tp``, or raise ``ConfigError``."""

    def fail(extra: str = "") -> typing.NoReturn:
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(tp)}.{extra}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in _NONE)
        ):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        fail()
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices)}.{hint}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            fail()
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        fail(" Use true or false.")
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
        fail(" Use a whole number such as 100.")
    if tp is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        fail(" Use a number such as 0.001 or 1e-3.")
    if tp is str:
        if isinstance(value, str):
            return value
        fail(" Quote it in YAML.")
    raise AssertionError(f"config field {key} has unsupported type {tp!r}")  # a bug in a config


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _unknown(key: str, valid: list[str], prefix: str) -> ConfigError:
    full = f"{prefix}{key}"
    valid_full = [f"{prefix}{v}" for v in valid]
    close = difflib.get_close_matches(full, valid_full, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {full!r}.{hint} Valid keys: {', '.join(valid_full)}.")


def from_dict(data: dict | None, cls: type = RunConfig, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a nested dict (missing keys keep their defaults).

    Raises:
        ConfigError: an unknown key (with the closest valid one) or a value of the wrong type.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys to values, got "
            f"{data!r}."
        )
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(str(key), list(fields), prefix)
        f, tp = fields[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(value, tp, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """The nested plain-dict form of a config (what ``config.yaml`` holds)."""
    return dataclasses.asdict(config)


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """Every dotted key with its type, default and help: ``[(key, type, default, help), ...]``."""
    out = []
    instance = cls()
    for name, (f, tp) in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out += config_keys(tp, f"{prefix}{name}.")
        else:
            help_text = f.metadata.get("help", "")
            out.append((f"{prefix}{name}", tp, getattr(instance, name), help_text))
    return out


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``--section.key=value`` (or ``section.key=value``) overrides, type-checked.

    Raises:
        ConfigError: malformed override, unknown key or wrong type.
    """
    config = from_dict(to_dict(config))  # a copy
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(
                f"override {item!r} has no value; write it as --{text}=VALUE (e.g. "
                "--train.steps=2000)."
            )
        key, value = text.split("=", 1)
        *parents, leaf = key.split(".")
        target, prefix = config, ""
        for part in parents:
            fields = _fields(type(target))
            if part not in fields:
                sections = [k for k, (_, t) in fields.items() if dataclasses.is_dataclass(t)]
                raise _unknown(part, sections, prefix)
            if not dataclasses.is_dataclass(fields[part][1]):
                raise ConfigError(
                    f"{prefix}{part} is a value, not a section; write --{prefix}{part}=VALUE."
                )
            target, prefix = getattr(target, part), f"{prefix}{part}."
        fields = _fields(type(target))
        if leaf not in fields:
            raise _unknown(leaf, list(fields), prefix)
        f, tp = fields[leaf]
        if dataclasses.is_dataclass(tp):
            raise ConfigError(
                f"{prefix}{leaf} is a section; set one of its keys, e.g. "
                f"--{prefix}{leaf}.{dataclasses.fields(tp)[0].name}=VALUE."
            )
        setattr(target, leaf, _coerce(value, tp, f"{prefix}{leaf}"))
    return from_dict(to_dict(config))  # rebuilt, so each section's own checks run


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


# ---------------------------------------------------------------------------------------------
# Files


def load_yaml(path: str | Path) -> RunConfig:
    """Read a preset or a run's ``config.yaml``; the run name defaults to the file's stem.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unreadable YAML, unknown keys or wrong types.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data:, train: ...).")
    data.setdefault("name", path.stem if path.name != "config.yaml" else path.parent.name)
    return from_dict(data)


def save_yaml(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (reloads with ``load_yaml`` to an equal ``RunConfig``)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _presets_dir() -> Path:
    return Path(str(resources.files("flowforge") / "configs"))


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description (the first comment line of its YAML file)."""
    out = {}
    for path in sorted(_presets_dir().glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
        out[path.stem] = first.lstrip("#").strip()
    return out


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; ``ConfigError`` naming the presets if there is none."""
    path = _presets_dir() / f"{name}.yaml"
    if not path.is_file():
        names = list(list_presets())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{name!r} is neither a preset, a .yaml file nor a run directory.{hint} "
            f"Presets: {', '.join(names)}."
        )
    return path

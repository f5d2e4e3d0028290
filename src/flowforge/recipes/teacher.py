"""Teachers of the distilled runs: a trained flow-matching run, frozen, copied into the run.

``method.teacher`` names the teacher's run directory (reflow, FreeFlow, FlowTurbo). The teacher
is copied into the distilled run (``teacher.safetensors`` and ``teacher.yaml``), so the run keeps
working when its teacher's directory is deleted; a teacher must have been trained on the same
data settings (``TEACHER_DATA_FIELDS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from flowforge.recipes.base import RunData, TrainContext
from flowforge.recipes.config import ConfigError, DataConfig, RunConfig, meta
from flowforge.recipes.config_io import load_yaml, save_yaml
from flowforge.train.checkpoint import CONFIG_FILE, load_weights
from flowforge.utils.io import atomic_path

__all__ = [
    "TEACHER_CONFIG",
    "TEACHER_DATA_FIELDS",
    "TEACHER_FILE",
    "load_teacher",
    "require_teacher",
    "resolve_teacher",
    "teacher_key",
    "run_teacher",
    "teacher_network",
    "training_teacher",
]

TEACHER_FILE = "teacher.safetensors"
TEACHER_CONFIG = "teacher.yaml"

TeacherBuilder = Callable[[RunConfig], nn.Module]


def teacher_key() -> Any:
    """The ``method.teacher`` field of a distilling recipe's config."""
    return field(default=None, metadata=meta("directory of a trained fm run (the teacher)"))


def teacher_network(data: RunData) -> TeacherBuilder:
    """Builds a teacher's untrained network for ``data`` from the teacher's config (the
    flow-matching recipe's network: an MLP, UNet or DiT)."""
    from flowforge.recipes.flow_matching import FlowMatchingRecipe

    return lambda teacher_config: FlowMatchingRecipe(teacher_config).build_model(data)


# the data settings a teacher and its student must share (n_train only sizes a training set)
TEACHER_DATA_FIELDS = (
    "name",
    "path",
    "image_size",
    "image_channels",
    "channels",
    "autoencoder",
    "conditional",
    "label_column",
    "normalize",
)


def load_teacher(
    path: str | Path, build: TeacherBuilder, data: DataConfig | None = None, key: str = "teacher"
) -> nn.Module:
    """The EMA weights of a trained ``fm`` run (frozen, eval mode), checked against the data.

    ``path`` is the teacher's run directory, or a distilled run holding a copy of its teacher;
    ``build(teacher_config)`` makes the untrained network (``teacher_network(data)``);
    ``data``, the student's data settings, must match the teacher's (``TEACHER_DATA_FIELDS``);
    ``key`` is the ``method.`` field that named it (in messages: ``teacher``, or a fine-tuned
    run's ``base``).

    Raises:
        FileNotFoundError: ``path`` is not a run directory.
        ConfigError: the run is not a flow-matching run on data of this shape.
    """
    run = Path(path)
    copy = (run / TEACHER_FILE).is_file()  # a distilled run holding its teacher's copy
    config_file = run / (TEACHER_CONFIG if copy else CONFIG_FILE)
    if not config_file.is_file():
        raise FileNotFoundError(
            f"method.{key}={str(path)!r} is not a run directory (no {CONFIG_FILE}); train a "
            "teacher first, e.g. `flowforge train toy2d_fm`, and pass its directory."
        )
    teacher_config = load_yaml(config_file)
    from flowforge.recipes.flow_matching import FlowMatchingConfig

    if not isinstance(teacher_config.method, FlowMatchingConfig):
        raise ConfigError(
            f"method.{key}={str(path)!r} is a {teacher_config.method.name!r} run; the "
            f"{key} must be a flow-matching run (method.name=fm), e.g. `flowforge train "
            "toy2d_fm`."
        )
    if data is not None:
        differ = [
            f"data.{k}={getattr(teacher_config.data, k)!r} (this run: {getattr(data, k)!r})"
            for k in TEACHER_DATA_FIELDS
            if getattr(teacher_config.data, k) != getattr(data, k)
        ]
        if differ:
            raise ConfigError(
                f"method.{key}={str(path)!r} was trained on other data: "
                f"{', '.join(differ)}; pass a run trained on the same data."
            )
    try:
        net = build(teacher_config)
        if copy:
            net.load_state_dict(load_file(str(run / TEACHER_FILE)))
        else:
            load_weights(run, net, which="ema")
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"method.{key}={str(path)!r} was trained on other data ({e}); pass a run "
            "trained on the same data (features or image shape, classes)."
        ) from None
    return net.eval().requires_grad_(False)


def _save_teacher(teacher: nn.Module, teacher_dir: str, run_dir: Path) -> None:
    with atomic_path(run_dir / TEACHER_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp))
    save_yaml(load_yaml(Path(teacher_dir) / CONFIG_FILE), run_dir / TEACHER_CONFIG)


def run_teacher(
    config: RunConfig, run_dir: Path | None, build: TeacherBuilder, key: str = "teacher"
) -> nn.Module:
    """The teacher of a distilled run: its copy in ``run_dir``, else ``method.<key>``."""
    if run_dir is not None and (run_dir / TEACHER_FILE).is_file():
        return load_teacher(run_dir, build, config.data, key)
    path = getattr(config.method, key)
    if path is None:
        raise ConfigError(f"{run_dir} has no {key} copy and method.{key} is not set.")
    return load_teacher(path, build, config.data, key)


def training_teacher(
    config: RunConfig, data: RunData, context: TrainContext, key: str = "teacher"
) -> nn.Module:
    """The frozen teacher of a distilled run that starts or resumes: its copy in the run
    directory, else ``method.<key>``, which rank 0 then copies into the run."""
    run_dir = context.run_dir
    teacher = run_teacher(config, run_dir, teacher_network(data), key)
    if context.main and run_dir is not None and not (run_dir / TEACHER_FILE).is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        _save_teacher(teacher, getattr(config.method, key), run_dir)
    return teacher


def resolve_teacher(config: RunConfig, key: str = "teacher") -> None:
    """Make ``method.<key>`` absolute, so the run finds it from any working directory."""
    if getattr(config.method, key) is not None:
        setattr(config.method, key, str(Path(getattr(config.method, key)).resolve()))


def require_teacher(config: RunConfig, key: str = "teacher") -> None:
    """``ConfigError`` unless ``method.<key>`` is set."""
    if getattr(config.method, key) is None:
        what = "distils" if key == "teacher" else "fine-tunes"
        raise ConfigError(
            f"method.name={config.method.name!r} {what} a trained flow: set "
            f"method.{key}=RUN_DIR (a run trained with method.name=fm, e.g. "
            "`flowforge train toy2d_fm`)."
        )

"""Training a run: ``fit`` is ``flowforge train`` from Python.

It checks the config, builds the run's data and network through its recipe, trains with the one
``train()`` (resuming a run directory that holds a checkpoint), then evaluates and draws it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from flowforge.recipes.base import Recipe, RunData, TrainContext, Training
from flowforge.recipes.config import ConfigError, RunConfig
from flowforge.recipes.config_io import apply_overrides, load_yaml, preset_path, to_dict
from flowforge.recipes.images import adapt_to_folder
from flowforge.recipes.run import RUNS_DIR, Run, build_data, read_run_config, set_threads
from flowforge.recipes.table import recipe_for
from flowforge.recipes.validation import validate
from flowforge.train import distributed
from flowforge.train.checkpoint import checkpoint_step, save_config
from flowforge.train.lock import RunDirectoryBusy, run_lock
from flowforge.train.logging import tensorboard_writer
from flowforge.train.loop import train
from flowforge.utils.seed import seed_everything

__all__ = ["fit"]


_FIXED_ON_RESUME = ("data", "model", "method")


def _check_resume(config: RunConfig, run_dir: Path) -> None:
    """A run directory may only be continued with the same data, model and method."""
    old = to_dict(read_run_config(run_dir))
    new = to_dict(config)
    changed = [
        f"{section}.{key} ({old[section].get(key)!r} -> {new[section][key]!r})"
        for section in _FIXED_ON_RESUME
        for key in new[section]
        if old[section].get(key) != new[section][key]
    ]
    if changed:
        raise ConfigError(
            f"{run_dir} already holds a run with different settings: {', '.join(changed)}. "
            "Only train.*, sample.* and eval.* may change when continuing a run; pass "
            "--out-dir=NEW_DIR (or --name=NEW_NAME) to start a new one."
        )


@contextlib.contextmanager
def _writer(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's writer lock (creating the directory), with a clear message
    when the directory cannot be written."""
    try:
        lock = run_lock(run_dir)
        lock.__enter__()
    except RunDirectoryBusy:
        raise
    except OSError as e:
        raise PermissionError(
            f"cannot write to the run directory {run_dir} ({e.strerror or e}); choose another "
            "with --out-dir."
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@contextlib.contextmanager
def _undo_on_error(run_dir: Path, before: set[str] | None) -> Iterator[None]:
    """Remove what a fresh start wrote if it fails before training (a bad teacher, data that
    do not fit): an error leaves nothing behind. ``before`` is the directory's listing before
    the start (None: there was no directory)."""
    try:
        yield
    except BaseException:
        if before is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for name in set(os.listdir(run_dir)) - before:
                path = run_dir / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        raise


def _resolve_source(config: RunConfig | str | os.PathLike) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    path = Path(config)
    if path.suffix in (".yaml", ".yml"):
        return load_yaml(path)
    return load_yaml(preset_path(str(config)))


def fit(
    config: RunConfig | str | os.PathLike = "toy2d_fm",
    *overrides: str,
    run_dir: str | os.PathLike | None = None,
    evaluate: bool = True,
) -> Run:
    """Train a run (or resume it) into ``run_dir`` (default ``runs/<name>``), then evaluate
    and draw it: what ``flowforge train`` does.

    Args:
        config: a ``RunConfig``, a preset name or a YAML file.
        overrides: dotted overrides, ``"train.steps=500"`` or ``"--train.steps=500"``.
        run_dir: the run directory; one that holds a checkpoint is resumed.
        evaluate: evaluate and draw after training (rank 0).

    Returns:
        The trained ``Run`` (its ``metrics`` set when evaluated).

    Example:
        >>> import tempfile
        >>> run = fit("toy2d_fm", "train.steps=2", "train.warmup_steps=0", "threads=1",
        ...           "train.progress=false", run_dir=tempfile.mkdtemp(), evaluate=False)
        ... # doctest: +ELLIPSIS
        training toy2d_fm in ... (fm): 2 features, 149250 parameters, to step 2, world size 1 ...
        trained to step 2 in ...
        >>> run.sample(3, nfe=2).shape
        torch.Size([3, 2])
    """
    config = apply_overrides(_resolve_source(config), list(overrides))  # a copy
    config, note = adapt_to_folder(config)
    if note:
        distributed.print0(f"note: {note}")
    validate(config)
    if config.train.tensorboard:
        tensorboard_writer()  # a missing extra is named before anything is written
    set_threads(config.threads)
    recipe = recipe_for(config)
    if config.data.path is not None:  # so `sample` and `eval` find it from any directory
        config.data.path = str(Path(config.data.path).resolve())
    recipe.prepare()
    run_dir = Path(RUNS_DIR, config.name) if run_dir is None else Path(run_dir)
    main = distributed.is_main()  # from the torchrun environment; train() joins the group
    t0 = time.perf_counter()
    resuming = checkpoint_step(run_dir) is not None if run_dir.is_dir() else False
    # The data are built before anything is written: a bad file leaves no run directory.
    data = build_data(config, run_dir if resuming else None)
    before = sorted(os.listdir(run_dir)) if run_dir.is_dir() else None
    with _writer(run_dir) if main else contextlib.nullcontext():
        resumed = checkpoint_step(run_dir)  # again, now that no other writer can change it
        if resumed is not None:
            _check_resume(config, run_dir)
        undo = main and resumed is None  # a fresh start removes what it wrote if it fails
        listing = None if before is None else set(before)
        with _undo_on_error(run_dir, listing) if undo else contextlib.nullcontext():
            if main:
                if resumed is None:  # first: a start killed from here on can be resumed
                    save_config(run_dir, to_dict(config))
                data.save(run_dir)
            seed_everything(config.train.seed)  # the initial weights depend on the seed only
            model = recipe.build_model(data)
            context = TrainContext(run_dir, resumed is not None, main)
            training = recipe.training(model, data, context)
        return _train_and_evaluate(
            config, recipe, data, model, training, run_dir, resumed, main, evaluate, t0
        )


def _train_and_evaluate(
    config: RunConfig,
    recipe: Recipe,
    data: RunData,
    model: nn.Module,
    training: Training,
    run_dir: Path,
    resumed: int | None,
    main: bool,
    evaluate: bool,
    t0: float,
) -> Run:
    distributed.print0(
        f"{'continuing' if resumed is not None else 'training'} {config.name} in {run_dir} "
        f"({config.method.name}): {data.describe()}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{'from step ' + str(resumed) + ' ' if resumed is not None else ''}to step "
        f"{config.train.steps}, world size {distributed.world_size()} "
        f"(data ready in {time.perf_counter() - t0:.1f} s)"
    )
    hook = recipe.progress_hook(data, run_dir) if config.train.eval_every else None
    t0 = time.perf_counter()
    result = train(
        model,
        training.objective,
        training.data,
        config.train,
        run_dir,
        eval_hook=hook,
        run_config=to_dict(config),
    )
    distributed.print0(f"trained to step {result.step} in {time.perf_counter() - t0:.1f} s")
    run = Run(
        config, data, result.model, result.ema, run_dir=run_dir, step=result.step, recipe=recipe
    )
    if main and evaluate:
        run.evaluate(write=True)
        run.draw()
    return run

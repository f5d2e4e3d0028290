"""Crash-safe checkpoints: safetensors weights plus a ``weights_only`` trainer state.

A run directory holds ``model.safetensors``, ``ema.safetensors`` (when EMA is on),
``trainer_state.pt`` (optimizer and scheduler ``state_dict``, step, RNG states, config dict; plain
tensors and containers, loadable with ``torch.load(..., weights_only=True)``) and
``config.yaml``.

Consistency protocol (a crash at any instant leaves one complete checkpoint):

1. every file is written into ``<run>/.checkpoint.staging/`` with
   :func:`flowforge.utils.atomic_path` (temp file, fsync, rename);
2. the staging directory is renamed to ``<run>/.checkpoint.ready`` -- the commit point;
3. the files are moved into ``<run>/`` one by one (model, EMA, trainer state) and the ready
   directory is removed.

A crash before step 2 leaves the previous checkpoint untouched (the staging directory is
discarded by the next save); a crash during step 3 is rolled forward by the next save or
``load_checkpoint`` (the trainer), which finishes the moves. ``load_weights`` (``sample``,
``eval``) never moves files: it reads a committed checkpoint where it lies. Each weights file
also records its step in the safetensors metadata and loading checks it against
``trainer_state.pt``, so files of different steps are never mixed silently.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowforge.train.ema import EMA
from flowforge.utils.checks import check_choice
from flowforge.utils.io import atomic_path

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_weights",
    "save_config",
    "checkpoint_step",
    "finish_pending_checkpoint",
    "unwrap",
    "MODEL_FILE",
    "EMA_FILE",
    "STATE_FILE",
    "CONFIG_FILE",
]

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
_STAGING = ".checkpoint.staging"
_READY = ".checkpoint.ready"
_ORDER = (MODEL_FILE, EMA_FILE, STATE_FILE)  # trainer state last: it marks the step
_DDP_PREFIX = "module."


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel`` and ``torch.compile`` wrappers.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap(torch.nn.DataParallel(net)) is net
        True
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _portable(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU copies without ``torch.compile`` key segments; tied tensors get their own storage."""
    out, seen = {}, set()
    for key, value in state_dict.items():
        key = ("." + key).replace("._orig_mod.", ".")[1:]  # compiled submodules
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value  # safetensors refuses shared storage
        seen.add(ptr)
    return out


def _digest(state_dict: dict[str, Tensor]) -> str:
    """A checksum of the tensors (names, dtypes, shapes and bytes), stored in each weights file's
    metadata so that damaged tensor data is found on load (a header can be intact)."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_weights_file(state_dict: dict[str, Tensor], path: Path, step: int) -> None:
    tensors = _portable(state_dict)
    meta = {"step": str(step), "format": "pt", "digest": _digest(tensors)}
    save_file(tensors, path, metadata=meta)


def _fit_keys(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Drop a ``module.`` prefix left by saving a DDP-wrapped model with plain torch."""
    expected = model.state_dict().keys()
    if state_dict and all(k.startswith(_DDP_PREFIX) for k in state_dict):
        if not all(k.startswith(_DDP_PREFIX) for k in expected):
            return {k[len(_DDP_PREFIX) :]: v for k, v in state_dict.items()}
    return state_dict


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish_pending_checkpoint(run_dir: str | os.PathLike) -> None:
    """Roll a committed but unfinished checkpoint forward (step 3 of the protocol); idempotent.

    Safe against a concurrent finisher: a file it moved or removed first is skipped.
    """
    run_dir = Path(run_dir)
    ready = run_dir / _READY
    if not ready.is_dir():
        return
    for name in _ORDER:
        try:
            os.replace(ready / name, run_dir / name)
        except FileNotFoundError:  # absent from this checkpoint, or already moved
            pass
    _fsync_dir(run_dir)
    shutil.rmtree(ready, ignore_errors=True)
    # An EMA file older than the model belongs to a run whose EMA has since been turned off.
    try:
        if _file_step(run_dir / EMA_FILE) != _file_step(run_dir / MODEL_FILE):
            (run_dir / EMA_FILE).unlink(missing_ok=True)
    except FileNotFoundError:  # no EMA file (or removed by the other finisher)
        pass


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _check_plain(value: object, where: str = "config_dict") -> None:
    """Only plain data may enter a checkpoint (anything else would need unpickling code)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}; use string keys.")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise TypeError(
            f"{where}={value!r} is a {type(value).__name__}; checkpoints hold plain data only "
            "(str, int, float, bool, None, lists, dicts): convert it, e.g. str(path)."
        )


def save_config(run_dir: str | os.PathLike, config_dict: dict) -> None:
    """Write ``config.yaml`` atomically (plain YAML, no Python tags)."""
    _check_plain(config_dict)
    with atomic_path(Path(run_dir) / CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(config_dict, sort_keys=False))


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    ema: EMA | nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
    config_dict: dict,
    objective_state: dict | None = None,
) -> None:
    """Write a complete checkpoint of ``step`` into ``run_dir`` (see the module docstring).

    Args:
        run_dir: the run directory (created if missing).
        model: the trained network; DDP / ``torch.compile`` wrappers are stripped.
        ema: an :class:`EMA`, its shadow module, or None (an older ``ema.safetensors`` is then
            removed so it cannot be mistaken for the current one).
        optimizer, scheduler: their ``state_dict`` goes into ``trainer_state.pt``.
        step: number of optimizer steps taken.
        config_dict: plain dict of the run's configuration (``asdict(config)``).
        objective_state: the objective's own ``state_dict()`` (tensors and plain values), for
            objectives that keep state between steps (an EMA target network, an auxiliary
            network and its optimizer), or None.

    Raises:
        OSError: the directory is not writable or the disk is full; the previous checkpoint in
            ``run_dir`` is left as it was.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.AdamW(net.parameters())
        >>> run = tempfile.mkdtemp()
        >>> save_checkpoint(run, net, None, opt, None, step=3, config_dict={"lr": 1e-3})
        >>> load_checkpoint(run, torch.nn.Linear(2, 1))
        3
    """
    _check_plain(config_dict)
    run_dir = Path(run_dir)
    staging = run_dir / _STAGING
    ema_module = ema.module if isinstance(ema, EMA) else ema
    state = {
        "format": 1,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "ema_num_updates": ema.num_updates if isinstance(ema, EMA) else None,
        "rng": _rng_state(),
        "config": config_dict,
        "objective": objective_state,
    }
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        finish_pending_checkpoint(run_dir)
        if staging.exists():
            shutil.rmtree(staging)  # debris of a crash before a commit
        staging.mkdir()
        with atomic_path(staging / MODEL_FILE) as tmp:
            _save_weights_file(unwrap(model).state_dict(), tmp, step)
        if ema_module is not None:
            with atomic_path(staging / EMA_FILE) as tmp:
                _save_weights_file(unwrap(ema_module).state_dict(), tmp, step)
        with atomic_path(staging / STATE_FILE) as tmp:
            torch.save(state, tmp)
        _fsync_dir(staging)
        os.replace(staging, run_dir / _READY)  # the commit point
        _fsync_dir(run_dir)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports I/O as RuntimeError
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(
            f"could not write the checkpoint of step {step} to {run_dir} ({e}); the previous "
            "checkpoint there is unchanged. Make the directory writable or free disk space, or "
            "pass another run directory."
        ) from e
    finish_pending_checkpoint(run_dir)
    if ema_module is None and (run_dir / EMA_FILE).exists():
        (run_dir / EMA_FILE).unlink()


def save_weights(
    run_dir: str | os.PathLike, model: nn.Module, ema: nn.Module | None = None, step: int = 0
) -> None:
    """Write the weights of ``step`` (``model.safetensors`` and, given ``ema``,
    ``ema.safetensors``) into ``run_dir``, each atomically, as ``load_weights`` reads them.

    For exporting trained weights (``Run.save``); training writes whole checkpoints with
    :func:`save_checkpoint`. An older ``ema.safetensors`` is removed when ``ema`` is None.

    Example:
        >>> import tempfile
        >>> net, run = torch.nn.Linear(2, 1), tempfile.mkdtemp()
        >>> save_weights(run, net, step=7)
        >>> bool(torch.equal(load_weights(run, torch.nn.Linear(2, 1)).bias, net.bias))
        True
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, module in ((MODEL_FILE, model), (EMA_FILE, ema)):
        if module is None:
            (run_dir / name).unlink(missing_ok=True)
            continue
        with atomic_path(run_dir / name) as tmp:
            _save_weights_file(unwrap(module).state_dict(), tmp, step)


def _file_step(path: Path) -> int:
    """Step recorded in a weights file's metadata."""
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError: truncated or not a safetensors file
        raise ValueError(
            f"{path} is corrupt or truncated ({e}); delete the run directory to start over, "
            "or restore the file from a backup."
        ) from e
    if "step" not in meta:
        raise ValueError(
            f"{path} has no 'step' metadata, so it was not written by flowforge's "
            "save_checkpoint; load it with safetensors.torch.load_file instead."
        )
    return int(meta["step"])


def _load_weights_file(path: Path, model: nn.Module) -> None:
    """Load a weights file into ``model`` after checking its checksum and that every tensor
    is finite, so damaged or diverged weights are refused, naming the file and the tensor."""
    try:
        state_dict = load_file(path, device="cpu")
        with safe_open(path, "pt") as f:  # the header again, for the checksum
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(
            f"{path} is corrupt or truncated ({e}); delete the run directory to start over, "
            "or restore the file from a backup."
        ) from e
    if "digest" in meta and _digest(state_dict) != meta["digest"]:
        raise ValueError(
            f"{path} is corrupt: its tensor data do not match the checksum written with them "
            "(the file was damaged or edited); restore it from a backup or train again."
        )
    for key, value in state_dict.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(
                f"{path} holds non-finite values (nan or inf) in tensor {key!r}, so its weights "
                "are unusable; train again from the last finite checkpoint with a lower "
                "train.lr."
            )
    try:
        model = unwrap(model)
        model.load_state_dict(_fit_keys(_portable(state_dict), model))
    except RuntimeError as e:
        raise ValueError(
            f"{path} does not fit the model ({e}); build the model with the settings in "
            f"{path.parent / CONFIG_FILE}."
        ) from e


def _load_state(path: Path, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # torch's message for a disallowed class or function
            raise ValueError(
                f"{path} contains pickled code or Python objects (not only tensors and plain "
                "containers) and will not be loaded; a flowforge checkpoint never does. Delete it "
                "or regenerate it from trusted weights."
            ) from e
        raise ValueError(
            f"{path} is corrupt ({str(e).splitlines()[-1] if str(e) else e!r}); delete the run "
            "directory to start over, or restore the file from a backup."
        ) from e
    except Exception as e:  # truncated zip archive, EOFError, ...
        raise ValueError(
            f"{path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]}); delete the "
            "run directory to start over, or restore the file from a backup."
        ) from e


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        raise FileNotFoundError(
            f"run directory {run_dir} does not exist; check the path (runs are created by "
            "`flowforge train`)."
        )
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file, not a run directory; check the path.")


_READ_ATTEMPTS = 5


def _while_training(read, run_dir: Path):
    """``read(run_dir)``, retried when a training process moves a file away mid-read.

    A live run moves each committed file from ``.checkpoint.ready/`` into ``<run>/`` (and the
    next checkpoint replaces them), so a reader may pick a path that vanishes before it opens
    it; the files stay complete throughout, so looking again finds them.
    """
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read(run_dir)
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def checkpoint_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the checkpoint in ``run_dir``, or None when it holds none (yet).

    Safe to call while a run is training into ``run_dir``.
    """
    return _while_training(_checkpoint_step, Path(run_dir))


def _checkpoint_step(run_dir: Path) -> int | None:
    for path in (run_dir / _READY / STATE_FILE, run_dir / STATE_FILE):  # committed one first
        if path.exists():
            return _load_state(path, mmap=True)["step"]  # mmap: tensors are not read
    return None


def load_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    ema: EMA | nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    restore_rng: bool = False,
    objective: object | None = None,
) -> int:
    """Load the checkpoint in ``run_dir`` into the given objects and return its step.

    Args:
        run_dir: a run directory written by :func:`save_checkpoint`.
        model: receives ``model.safetensors``.
        ema: an :class:`EMA` or module receiving ``ema.safetensors`` (required to exist if given).
        optimizer, scheduler: receive their states from ``trainer_state.pt``.
        restore_rng: also restore the torch, CUDA, NumPy and Python global RNG states.
        objective: receives the saved objective state through its ``load_state_dict`` (if it
            has one and the checkpoint holds a state).

    Returns:
        The number of optimizer steps the checkpoint had taken.

    Raises:
        FileNotFoundError: missing run directory or file.
        ValueError: a corrupt or truncated file, files of different steps, weights that do not
            fit ``model``, or a ``trainer_state.pt`` containing pickled code.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    finish_pending_checkpoint(run_dir)
    state_path, model_path = run_dir / STATE_FILE, run_dir / MODEL_FILE
    for path, what in ((state_path, "trainer state"), (model_path, "model weights")):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing, so {run_dir} holds no complete checkpoint ({what}); delete "
                "the run directory to start over, or restore the file from a backup."
            )
    state = _load_state(state_path)
    step = state["step"]
    targets = [(model_path, model)]
    if ema is not None:
        targets.append((run_dir / EMA_FILE, ema.module if isinstance(ema, EMA) else ema))
        if not targets[-1][0].exists():
            raise FileNotFoundError(
                f"{run_dir / EMA_FILE} is missing (the run was trained without EMA); "
                "load without ema, or use load_weights(..., which='model')."
            )
    for path, module in targets:
        file_step = _file_step(path)
        if file_step != step:
            raise ValueError(
                f"{path} holds step {file_step} but {state_path} holds step {step}: the files "
                "come from different checkpoints (copied by hand?); restore a consistent set "
                "or delete the run directory to start over."
            )
        _load_weights_file(path, module)
    if isinstance(ema, EMA) and state.get("ema_num_updates") is not None:
        ema.num_updates = state["ema_num_updates"]
    try:
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"the optimizer state in {state_path} does not fit this model/optimizer ({e}); "
            "resume with the same model and optimizer settings, or start a new run directory."
        ) from e
    if restore_rng:
        _set_rng_state(state["rng"])
    saved = state.get("objective")
    if saved is not None and callable(getattr(objective, "load_state_dict", None)):
        objective.load_state_dict(saved)
    return step


def load_weights(
    run_dir: str | os.PathLike, model: nn.Module, which: Literal["ema", "model"] = "ema"
) -> nn.Module:
    """Load trained weights for sampling or evaluation; returns ``model``.

    ``which="ema"`` falls back to ``model.safetensors`` when the run has no (current) EMA file.
    Read-only, so it is safe beside a training process: the files of a committed but not yet
    moved checkpoint are read from ``.checkpoint.ready/`` (they are complete there), and nothing
    in ``run_dir`` is moved or written.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(2, 1)
        >>> run = tempfile.mkdtemp()
        >>> save_checkpoint(run, net, None, torch.optim.SGD(net.parameters(), 0.1), None, 1, {})
        >>> same = load_weights(run, torch.nn.Linear(2, 1))
        >>> bool(torch.equal(same.weight, net.weight))
        True
    """
    check_choice("which", which, ["ema", "model"])
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    return _while_training(lambda d: _load_newest_weights(d, model, which), run_dir)


def _newest(run_dir: Path, name: str) -> Path:
    """A file of the committed checkpoint: in ``.checkpoint.ready/`` until moved out."""
    ready = run_dir / _READY
    if ready.is_dir():
        # A ready directory without the file: the checkpoint has none (e.g. EMA turned off)
        # unless the file was already moved out.
        return ready / name if (ready / name).exists() else run_dir / name
    return run_dir / name


def _load_newest_weights(run_dir: Path, model: nn.Module, which: str) -> nn.Module:
    model_path, ema_path = _newest(run_dir, MODEL_FILE), _newest(run_dir, EMA_FILE)
    if not model_path.exists():
        raise FileNotFoundError(
            f"{model_path} is missing, so {run_dir} holds no trained weights yet; train first "
            "(`flowforge train`) or check the path."
        )
    path = model_path
    if which == "ema" and ema_path.exists():
        if _file_step(ema_path) == _file_step(model_path):
            path = ema_path
        else:
            warnings.warn(
                f"{ema_path} is from another step than {model_path}; using the model weights.",
                stacklevel=3,
            )
    _load_weights_file(path, model)
    return model

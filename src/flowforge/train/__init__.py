"""Training: one ``train()`` for single process and torchrun/DDP, EMA, checkpoints, logging.

This layer knows no algorithm: it receives a model, an objective
``objective(model, x, cond, generator) -> (B,)`` and a data source, and owns the loop,
the deterministic batch stream, checkpoints and logs.
"""

from flowforge.train import distributed
from flowforge.train.checkpoint import (
    checkpoint_step,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_config,
    save_weights,
    unwrap,
)
from flowforge.train.config import TrainConfig
from flowforge.train.data import BatchSource, BatchStream, make_stream
from flowforge.train.ema import EMA
from flowforge.train.lock import RunDirectoryBusy, run_lock
from flowforge.train.loop import (
    Objective,
    TrainingDiverged,
    TrainResult,
    lr_factor,
    make_optimizer,
    make_scheduler,
    resolve_device,
    train,
)

__all__ = [
    "BatchSource",
    "BatchStream",
    "EMA",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "RunDirectoryBusy",
    "checkpoint_step",
    "distributed",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "make_stream",
    "resolve_device",
    "run_lock",
    "save_checkpoint",
    "save_config",
    "save_weights",
    "train",
    "unwrap",
]

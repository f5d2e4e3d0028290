"""Training hyperparameters: one dataclass, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

__all__ = ["TrainConfig"]

SCHEDULES = ("constant", "cosine")
EMA_AUTO_WARMUP = (
    0.05  # share of the initial weights in a constant-decay EMA that turns warm-up on
)
PRECISIONS = ("fp32", "bf16")


def _help(text: str, default: object) -> object:
    """A dataclass field with ``default`` and ``metadata["help"]`` (read by the CLI's --help)."""
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything ``train()`` needs besides the model, the objective and the data.

    The global batch ``batch_size`` is split into ``world_size * grad_accum`` equal chunks; chunk
    ``j`` of step ``s`` draws its data and its objective noise from generators seeded by
    ``(seed, s, j)``, so a run is reproducible, resumable and independent of how the chunks are
    spread over ranks and micro-batches.

    Every field carries ``metadata["help"]``; invalid values raise ``ValueError`` (``TypeError``
    for a wrong type) naming the field, the value and the fix.

    Example:
        >>> TrainConfig(steps=100, lr=3e-4).schedule
        'cosine'
        >>> TrainConfig(lr=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: train.lr=-1.0 is out of range; use a positive learning rate such as 1e-3.
    """

    steps: int = _help("total number of optimizer steps", 2000)
    batch_size: int = _help(
        "global batch per optimizer step, split evenly across ranks and micro-batches", 512
    )
    grad_accum: int = _help("micro-batches per rank per optimizer step (gradient accumulation)", 1)
    lr: float = _help("peak learning rate of AdamW", 1e-3)
    weight_decay: float = _help("AdamW decoupled weight decay", 0.0)
    beta1: float = _help("AdamW first-moment decay beta1", 0.9)
    beta2: float = _help("AdamW second-moment decay beta2", 0.999)
    warmup_steps: int = _help("steps of linear learning-rate warm-up from lr/warmup_steps", 0)
    schedule: Literal["constant", "cosine"] = _help(
        "learning-rate decay after warm-up: constant or cosine", "cosine"
    )
    min_lr_ratio: float = _help(
        "final learning rate of the cosine schedule, as a fraction of lr", 0.0
    )
    grad_clip: float = _help("maximum global gradient norm (clip_grad_norm_); 0 disables", 1.0)
    ema_decay: float = _help(
        "decay of the exponential moving average of weights; 0 disables", 0.999
    )
    ema_warmup: bool | None = _help(
        "EMA decay min(ema_decay, (1 + n) / (10 + n)) at update n, so short runs forget the "
        "initial weights; null: on when they would keep more than 5% of the EMA at the end "
        "(ema_decay ** steps > 0.05)",
        None,
    )
    seed: int = _help("seed of the data stream, the objective's noise and the initial RNG", 0)
    log_every: int = _help("steps between metrics.jsonl lines and progress-bar updates", 50)
    ckpt_every: int = _help("steps between checkpoints (a final one is always written)", 500)
    eval_every: int = _help("steps between calls of the eval hook; 0 disables", 0)
    precision: Literal["fp32", "bf16"] = _help(
        "fp32, or bf16 autocast (torch.autocast) for the forward pass", "fp32"
    )
    compile: bool = _help("wrap the model in torch.compile", False)
    device: str = _help(
        "'auto' (cuda:LOCAL_RANK if CUDA is available, else cpu), 'cpu', 'cuda' or 'cuda:N'",
        "auto",
    )
    tensorboard: bool = _help("also write TensorBoard scalars (needs the [tb] extra)", False)
    progress: bool = _help("show a tqdm progress bar on rank 0", True)

    @property
    def ema_warms_up(self) -> bool:
        """Whether the EMA uses the warm-up schedule: ``ema_warmup``, or when that is None,
        whether the initial weights would keep more than 5% of a constant-decay EMA at the end.

        Example:
            >>> TrainConfig(steps=300).ema_warms_up, TrainConfig(steps=4000).ema_warms_up
            (True, False)
        """
        if self.ema_warmup is not None:
            return self.ema_warmup
        return self.ema_decay**self.steps > EMA_AUTO_WARMUP

    @property
    def warmup(self) -> int:
        """The warm-up steps used: ``warmup_steps``, or a tenth of the run when the warm-up
        asked for is longer than the run (``train()`` says so once).

        Example:
            >>> TrainConfig(steps=5, warmup_steps=100).warmup, TrainConfig(steps=50).warmup
            (0, 0)
        """
        return self.warmup_steps if self.warmup_steps <= self.steps else self.steps // 10

    def __post_init__(self) -> None:
        ints = {
            "steps": (1, "the number of optimizer steps, e.g. 2000"),
            "batch_size": (1, "the global batch size, e.g. 512"),
            "grad_accum": (1, "micro-batches per rank per step; use 1 for no accumulation"),
            "warmup_steps": (0, "use 0 for no warm-up"),
            "seed": (0, "use a non-negative seed such as 0"),
            "log_every": (1, "use e.g. 50"),
            "ckpt_every": (1, "use e.g. 500; a final checkpoint is always written"),
            "eval_every": (0, "use 0 to disable the eval hook"),
        }
        for name, (low, fix) in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"train.{name}={value!r} must be an int; {fix}.")
            if value < low:
                what = {1: "an integer >= 1", 0: "an integer >= 0"}[low]
                raise ValueError(f"train.{name}={value} is invalid: it must be {what} ({fix}).")
        # (name, low, low included, high, high included, fix)
        floats = [
            ("lr", 0.0, False, math.inf, False, "use a positive learning rate such as 1e-3"),
            ("weight_decay", 0.0, True, math.inf, False, "use 0 for no weight decay"),
            ("beta1", 0.0, True, 1.0, False, "use a value in [0, 1) such as 0.9"),
            ("beta2", 0.0, True, 1.0, False, "use a value in [0, 1) such as 0.999"),
            ("min_lr_ratio", 0.0, True, 1.0, True, "use a fraction in [0, 1], e.g. 0.1"),
            ("grad_clip", 0.0, True, math.inf, False, "use a positive max norm such as 1.0, or 0"),
            ("ema_decay", 0.0, True, 1.0, False, "use a value in [0, 1) such as 0.999, or 0"),
        ]
        for name, low, low_ok, high, high_ok, fix in floats:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"train.{name}={value!r} must be a number; {fix}.")
            above = value >= low if low_ok else value > low
            below = value <= high if high_ok else value < high
            if not (above and below):  # also rejects nan
                raise ValueError(f"train.{name}={value} is out of range; {fix}.")
        if self.batch_size % self.grad_accum:
            B, A = self.batch_size, self.grad_accum
            raise ValueError(
                f"train.batch_size={B} is not divisible by train.grad_accum={A}; use a multiple "
                f"of {A} such as {max(A, B - B % A)} (each micro-batch gets batch_size / "
                "(world_size * grad_accum) examples)."
            )
        for name, valid in (("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in valid:
                value = getattr(self, name)
                raise ValueError(f"train.{name}={value!r} is not valid; choose one of {valid}.")
        for name in ("compile", "tensorboard", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"train.{name}={getattr(self, name)!r} must be true or false.")
        if not isinstance(self.ema_warmup, bool) and self.ema_warmup is not None:
            raise TypeError(
                f"train.ema_warmup={self.ema_warmup!r} must be true, false or null (automatic)."
            )
        if not isinstance(self.device, str):
            raise TypeError(
                f"train.device={self.device!r} must be a string such as 'auto' or 'cpu'."
            )
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as e:
                raise ValueError(
                    f"train.device={self.device!r} is not a torch device; "
                    "use 'auto', 'cpu', 'cuda' or 'cuda:N'."
                ) from e

"""Rank-0 training logs: ``metrics.jsonl``, an optional TensorBoard writer and a tqdm bar.

``metrics.jsonl`` has one JSON object per line: training lines
``{"step", "loss", "lr", "grad_norm", "steps_per_s", "time"}`` (loss and grad_norm averaged over
the steps since the previous line, lr of the last step, time in Unix seconds) and eval lines
``{"step", "eval": {...}}``. On resume, lines past the resumed step are dropped first, so the
file of a resumed run has no duplicated or out-of-order steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from flowforge.utils.io import atomic_path

__all__ = ["MetricsLog", "METRICS_FILE", "tensorboard_writer", "truncate_metrics"]

METRICS_FILE = "metrics.jsonl"


def tensorboard_writer():
    """TensorBoard's ``SummaryWriter``; ``ImportError`` naming the extra when it is missing
    (checked before a run writes anything)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "train.tensorboard=true needs the tensorboard package, from the [tb] extra: pip "
            "install 'flowforge[tb]' (or set train.tensorboard=false)."
        ) from e
    return SummaryWriter


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the lines of ``path`` with ``"step" <= step`` (and drop a torn last line).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
        >>> _ = p.write_text('{"step": 1}\\n{"step": 2}\\n{"step": 3}\\n{"st')
        >>> truncate_metrics(p, 2)
        >>> p.read_text()
        '{"step": 1}\\n{"step": 2}\\n'
    """
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # torn line written when the run was killed
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            keep.append(line + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(keep))


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):  # tensors and NumPy scalars
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class MetricsLog:
    """Writes metrics lines and drives the progress bar; a silent no-op off rank 0.

    Args:
        run_dir: directory of ``metrics.jsonl`` (None: no files).
        start_step: the step training starts from (lines after it are dropped).
        total_steps: length of the progress bar.
        main: whether this process is rank 0.
        progress: show the tqdm bar.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``.
    """

    def __init__(
        self,
        run_dir: Path | None,
        start_step: int,
        total_steps: int,
        *,
        main: bool = True,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self.file = None
        self.writer = None
        if main and run_dir is not None:
            path = Path(run_dir) / METRICS_FILE
            truncate_metrics(path, start_step)
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if main and tensorboard:
            if run_dir is None:
                raise ValueError(
                    "train.tensorboard=True needs a run directory to write to; pass run_dir."
                )
            self.writer = tensorboard_writer()(log_dir=str(Path(run_dir) / "tensorboard"))
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not (main and progress), unit="step"
        )

    def step(self) -> None:
        """Advance the progress bar by one optimizer step."""
        self.bar.update(1)

    def write(self, record: dict) -> None:
        """Append ``record`` (must hold ``"step"``) to metrics.jsonl and TensorBoard."""
        record = _jsonable(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer is not None:
            scalars = record.get("eval", {k: v for k, v in record.items() if k != "eval"})
            prefix = "eval/" if "eval" in record else "train/"
            for key, value in scalars.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self.writer.add_scalar(prefix + key, value, record["step"])
        if "loss" in record:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4g}", steps_per_s=f"{record['steps_per_s']:.3g}"
            )

    def close(self) -> None:
        """Flush and close files and the bar."""
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()

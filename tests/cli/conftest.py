"""CLI tests call ``main(argv)`` in-process; undo the process-wide thread setting it makes.

``train_tiny`` runs an image preset at a size that takes seconds (shared by the image tests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flowforge.cli.main import main

TINY_IMAGE_RUN = [
    "--threads=1",
    "--model.base_channels=8",
    "--train.steps=3",
    "--train.batch_size=16",
    "--train.warmup_steps=0",
    "--train.ema_decay=0",
    "--train.progress=false",
    "--train.ckpt_every=3",
    "--sample.n=20",
    "--eval.n_samples=40",
    "--eval.classifier_steps=5",
]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_tiny() -> Callable[..., int]:
    """``train_tiny(preset, out_dir, *overrides)``: the exit code of a tiny ``flowforge train``."""

    def train(preset: str, out_dir: Path, *overrides: str) -> int:
        return main(["train", preset, f"--out-dir={out_dir}", *TINY_IMAGE_RUN, *overrides])

    return train

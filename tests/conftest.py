"""Test options: ``--device``, ``--dtype`` (float64 by default), ``--threads``; fixed seeds.

Two tiny trained runs are shared by the tests of the command line and of the recipes
(``vector_run``: toy2d_cond after 40 steps; ``image_run``: digits after 3 steps), and
``train_tiny`` trains an image preset at a size that takes seconds. One flow-matching MLP on 8
gaussians is trained per session for the few-step methods (``teacher_8g``, float64) and the
fine-tuning methods (``base_8g``, the same weights in float32).

The suite's networks and statistical checks are many small tensor ops, for which intra-op
threads add overhead rather than speed (measured: a 400-step toy training loop took 97 s with two
threads on a busy 2-core machine and 2 s with one), so tests run single-threaded by default.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.models.mlp import MLPConfig, MLPField


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for tests (default: cpu)")
    parser.addoption(
        "--dtype", default="float64", choices=["float32", "float64"], help="default float dtype"
    )
    parser.addoption("--threads", default=1, type=int, help="torch intra-op threads (default: 1)")


def pytest_configure(config: pytest.Config) -> None:
    # Session-wide, so module-scoped fixtures and doctests run single-threaded too.
    torch.set_num_threads(config.getoption("--threads"))


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(autouse=True)
def _seed_and_dtype(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, request.config.getoption("--dtype")))
    yield
    torch.set_default_dtype(previous)


TINY_VECTORS = [
    "--threads=1",
    "--model.hidden=32",
    "--model.depth=2",
    "--train.steps=40",
    "--train.batch_size=64",
    "--train.warmup_steps=0",
    "--train.ema_decay=0.9",
    "--train.progress=false",
    "--train.ckpt_every=40",
    "--sample.n=100",
    "--eval.n_samples=100",
    "--eval.floor_repeats=1",
    "--eval.nfes=2,4",
    "--eval.solvers=euler",
    "--eval.dopri5=false",
]
TINY_IMAGE_RUN = [  # an image preset at a size that takes seconds
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


def _train(out: Path, preset: str, *args: str) -> Path:
    from flowforge.cli.main import main

    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        assert main(["train", preset, f"--out-dir={out}", *args]) == 0
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def vector_run(tmp_path_factory) -> Path:
    """toy2d_cond (8 classes) after 40 steps."""
    return _train(tmp_path_factory.mktemp("recipes") / "cond", "toy2d_cond", *TINY_VECTORS)


@pytest.fixture(scope="session")
def train_tiny() -> Callable[..., int]:
    """``train_tiny(preset, out_dir, *overrides)``: the exit code of a tiny ``flowforge train``
    of an image preset."""
    from flowforge.cli.main import main

    def train(preset: str, out_dir: Path, *overrides: str) -> int:
        return main(["train", preset, f"--out-dir={out_dir}", *TINY_IMAGE_RUN, *overrides])

    return train


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Path:
    """digits (10 classes, 8x8) after 3 steps, evaluated at Euler NFE 2."""
    out = tmp_path_factory.mktemp("recipes") / "digits"
    return _train(out, "digits", *TINY_IMAGE_RUN, "--eval.nfes=2", "--eval.solvers=euler")


def train_fm_teacher(
    steps: int = 1500, hidden: int = 128, batch: int = 256, seed: int = 0
) -> MLPField:
    """A conditional-OT flow-matching MLP trained on 8 gaussians (Adam 1e-3, eval mode).

    Measured (1500 steps, 4096 samples, 512 directions): sliced W2 of 100-step Euler samples
    0.218 against a finite-sample floor of 0.075; 1 step 2.61, 2 steps 1.06, 4 steps 0.50.
    Tests that need a teacher assert relative to it, not to the data.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MLPField(MLPConfig(dim=2, hidden=hidden, depth=3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = FlowMatchingLoss()
    for _ in range(steps):
        x_1, _ = eight_gaussians(batch, generator=g)
        loss = loss_fn(net, x_1, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def _fm_8g() -> MLPField:
    """The session's 8-gaussians flow (3 x 128 SiLU MLP, 1500 steps, seed 0), in float32."""
    with torch.random.fork_rng():
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            return train_fm_teacher()
        finally:
            torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def teacher_8g(_fm_8g) -> MLPField:
    """The 8-gaussians flow in float64 (the suite's default dtype), for the few-step methods."""
    return copy.deepcopy(_fm_8g).to(torch.float64)


@pytest.fixture(scope="session")
def base_8g(_fm_8g) -> MLPField:
    """The 8-gaussians flow in float32, the base model of the fine-tuning methods (copy it
    before fine-tuning: ``copy.deepcopy(base_8g).requires_grad_(True).train()``)."""
    return _fm_8g

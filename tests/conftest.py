"""Test options: ``--device``, ``--dtype`` (float64 by default), ``--threads``; fixed seeds.

The suite's networks and statistical checks are many small tensor ops, for which intra-op
threads add overhead rather than speed (measured: a 400-step toy training loop took 97 s with two
threads on a busy 2-core machine and 2 s with one), so tests run single-threaded by default.
"""

from __future__ import annotations

import pytest
import torch


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

"""Test options: ``--device`` and ``--dtype`` (float64 by default), fixed seeds."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for tests (default: cpu)")
    parser.addoption(
        "--dtype", default="float64", choices=["float32", "float64"], help="default float dtype"
    )


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

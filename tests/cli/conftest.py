"""CLI tests call ``main(argv)`` in-process; undo the process-wide thread setting it makes.

The tiny image runs (``train_tiny``) and the shared trained runs live in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

"""Tiny wrapper over torch.distributed for runs launched by ``torchrun`` (or not at all).

Single-process runs need no set-up: every function below degrades to the obvious single-rank
answer. Under ``torchrun`` the rank, world size and local rank come from the environment
variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, and :func:`init` joins the process group
(NCCL on GPUs, Gloo on CPU).

References:
    Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
    arXiv:2206.00364 -- ``torch_utils/distributed.py`` of its code release.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Literal

import torch
import torch.distributed as dist

__all__ = [
    "init",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "print0",
    "barrier",
    "cleanup",
]

_RELEASE_PAUSE_S = 0.2  # see cleanup()


def init(backend: Literal["nccl", "gloo"] | None = None) -> bool:
    """Join the process group described by the ``torchrun`` environment, if any.

    A no-op (returning False) when ``WORLD_SIZE`` is unset or 1, or when the group already exists.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; by default NCCL when CUDA is available, else Gloo.

    Returns:
        True if this call created the process group; :func:`cleanup` then runs at exit (or
        call it earlier).

    Example:
        >>> init()  # single process: nothing to do
        False
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    atexit.register(cleanup)
    return True


def rank() -> int:
    """Global rank of this process (0 when not distributed).

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes (1 when not distributed).

    Example:
        >>> world_size()
        1
    """
    return (
        dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    )


def local_rank() -> int:
    """Rank of this process on its machine; selects the GPU ``cuda:LOCAL_RANK``."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0, the process that writes files and prints."""
    return rank() == 0


def print0(*args: object, **kwargs: object) -> None:
    """``print`` on rank 0 only."""
    if is_main():
        print(*args, **kwargs)


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (a no-op when not distributed).

    Gloo's worker threads release a finished collective's tensors a moment after the caller
    sees it complete; that release takes the GIL, and if the interpreter is already shutting
    down the process aborts ("terminate called without an active exception"). A short pause
    after leaving the group lets the workers finish while the interpreter is alive.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(_RELEASE_PAUSE_S)

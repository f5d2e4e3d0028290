"""One writer per run directory: an exclusive lock held while a run trains.

The lock is an ``flock`` on ``<run>/.lock`` taken by the process that writes the run (rank 0);
the operating system releases it when that process exits or is killed, so a ``kill -9`` never
leaves a stale lock. A second writer is refused with the holder's pid; readers (``sample``,
``eval``) never take it. Within one process the lock is re-entrant (``fit`` holds it while
``train()`` takes it again).

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with run_lock(run):
    ...     with run_lock(run):  # the same process may take it again
    ...         pass
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per directory is then not enforced
    fcntl = None

__all__ = ["LOCK_FILE", "RunDirectoryBusy", "run_lock"]

LOCK_FILE = ".lock"
_HELD: dict[Path, tuple[int, int]] = {}  # run directory -> (file descriptor, depth)


class RunDirectoryBusy(OSError):
    """Another process is training into the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory's writer lock for the ``with`` block (creating the directory).

    Raises:
        RunDirectoryBusy: another live process holds it; the message names its pid and host.
    """
    path = Path(run_dir).resolve()
    if path in _HELD:
        fd, depth = _HELD[path]
        _HELD[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[path]
            _HELD[path] = (fd, depth - 1)
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirectoryBusy(
                    f"{run_dir} is being trained by another process ({holder}); wait for it to "
                    "finish or stop it, or train into another directory with --out-dir. "
                    "(`flowforge sample` and `flowforge eval` may read it meanwhile.)"
                ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}".encode(), 0)
        _HELD[path] = (fd, 1)
        try:
            yield
        finally:
            del _HELD[path]
    finally:
        os.close(fd)  # closing the descriptor releases the flock

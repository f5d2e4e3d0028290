"""Deterministic batch streams: which examples and which noise each chunk of each step sees.

A step's global batch of ``B`` examples is split into ``K = world_size * grad_accum`` chunks of
``B / K``; chunk ``j = rank * grad_accum + k`` is a pure function of ``(seed, step, j)``. Nothing
is carried from step to step, so a resumed run replays exactly the same stream, and one process
with ``grad_accum = 2`` computes the same chunks as two ranks with ``grad_accum = 1``.

Two kinds of data are accepted (``BatchSource``):

* a sampler ``data(n, generator) -> (x, labels_or_None)`` (or just ``x``) drawing ``n`` fresh
  examples on the CPU from ``generator``, which is seeded by ``(seed, step, j)``;
* a ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, label)``. Epoch ``e`` visits the
  dataset in the order of a permutation seeded by ``(seed, e)``; global batches consume this
  endless stream of epochs back to back, so position ``p = step * B + i`` is example
  ``perm_{p // N}[p % N]``. Nothing is dropped: a batch straddling an epoch boundary takes the
  remainder of one epoch and the start of the next, and every example is seen exactly once per
  epoch. (This replaces ``DistributedSampler``: the rank only selects its slice.)

The objective's noise uses a second generator per chunk, seeded by ``(seed, step, j)`` in another
stream and living on the training device (CUDA generators cannot feed CPU samplers and vice
versa).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

__all__ = ["BatchSource", "BatchStream", "make_stream", "chunk_seed", "chunk_generator"]

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor | None] | Tensor]
BatchSource = Sampler | Dataset

# Stream tags keep the seeds of different uses apart.
_DATA, _NOISE, _PERM = 0, 1, 2


def chunk_seed(seed: int, tag: int, *key: int) -> int:
    """A 64-bit seed mixing ``seed``, a stream ``tag`` and a key such as ``(step, chunk)``.

    Uses NumPy's ``SeedSequence`` hashing, so nearby keys give unrelated streams.

    Example:
        >>> chunk_seed(0, 1, 5, 0) == chunk_seed(0, 1, 5, 0) != chunk_seed(0, 1, 5, 1)
        True
    """
    return int(np.random.SeedSequence([seed, tag, *key]).generate_state(1, np.uint64)[0])


def chunk_generator(
    seed: int, step: int, chunk: int, device: torch.device | str = "cpu", tag: int = _NOISE
) -> torch.Generator:
    """The generator of chunk ``chunk`` at step ``step`` (noise stream by default)."""
    g = torch.Generator(device=device)
    g.manual_seed(chunk_seed(seed, tag, step, chunk))
    return g


class BatchStream:
    """Chunks of global batches as a pure function of ``(step, chunk)``; see the module docstring.

    Args:
        data: a sampler callable or a ``Dataset``.
        seed: the run's seed.
        batch_size: global batch size ``B``.

    Example:
        >>> ds = TensorDataset(torch.arange(10.0).unsqueeze(1))
        >>> s = BatchStream(ds, seed=0, batch_size=4)
        >>> a = torch.cat([s.chunk(step, 0, 4)[0] for step in range(5)])  # 20 positions
        >>> sorted(a[:10, 0].tolist()) == sorted(a[10:, 0].tolist()) == list(range(10))
        True
    """

    def __init__(self, data: BatchSource, seed: int, batch_size: int) -> None:
        self.data = data
        self.seed = seed
        self.batch_size = batch_size
        self.is_dataset = isinstance(data, Dataset)
        if self.is_dataset:
            try:
                self.n = len(data)  # type: ignore[arg-type]
            except TypeError as e:
                raise TypeError(
                    f"data={type(data).__name__} has no len(); pass a map-style Dataset "
                    "(e.g. TensorDataset) or a sampler callable data(n, generator)."
                ) from e
            if self.n == 0:
                raise ValueError("data is an empty Dataset; pass a dataset with examples.")
        elif not callable(data):
            raise TypeError(
                f"data={type(data).__name__} is neither a Dataset nor a callable; pass a "
                "sampler data(n, generator) -> (x, labels_or_None) or a torch Dataset."
            )
        self._perm_cache: dict[int, Tensor] = {}

    def chunk(self, step: int, j: int, chunk_size: int) -> tuple[Tensor, Tensor | None]:
        """Examples of chunk ``j`` (of size ``chunk_size``) of step ``step``: ``(x, labels)``."""
        if not self.is_dataset:
            gen = chunk_generator(self.seed, step, j, "cpu", tag=_DATA)
            return _split(self.data(chunk_size, gen), "data(n, generator)")
        start = step * self.batch_size + j * chunk_size
        positions = torch.arange(start, start + chunk_size)  # (b,)
        epochs, offsets = positions // self.n, positions % self.n
        index = torch.empty_like(positions)
        for e in epochs.unique().tolist():
            mask = epochs == e
            index[mask] = self._perm(e)[offsets[mask]]
        return self._gather(index)

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 2:  # only the current and next epoch are ever needed
                self._perm_cache.clear()
            g = torch.Generator().manual_seed(chunk_seed(self.seed, _PERM, epoch))
            self._perm_cache[epoch] = torch.randperm(self.n, generator=g)
        return self._perm_cache[epoch]

    def _gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        if isinstance(self.data, TensorDataset):  # fast path: one fancy-index per tensor
            tensors = self.data.tensors
            return tensors[0][index], (tensors[1][index] if len(tensors) > 1 else None)
        items = [_split(self.data[i], "dataset[i]") for i in index.tolist()]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        labels = [it[1] for it in items]
        if labels[0] is None:
            return x, None
        return x, torch.stack([torch.as_tensor(lab) for lab in labels])


def _split(item: object, source: str) -> tuple[Tensor, Tensor | None]:
    """Accept ``x``, ``(x,)`` or ``(x, label)``."""
    if isinstance(item, (tuple, list)):
        if len(item) == 1:
            return item[0], None
        if len(item) == 2:
            return item[0], item[1]
        raise ValueError(
            f"{source} returned a {len(item)}-tuple; return x or (x, labels_or_None)."
        )
    if isinstance(item, (Tensor, np.ndarray)):
        return item, None  # type: ignore[return-value]
    raise TypeError(
        f"{source} returned {type(item).__name__}; return a Tensor x or a tuple (x, labels)."
    )


def make_stream(data: BatchSource, seed: int, batch_size: int) -> BatchStream:
    """Dispatch ``data`` (sampler or Dataset) to a :class:`BatchStream`."""
    return BatchStream(data, seed, batch_size)

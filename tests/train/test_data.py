"""Batch streams: pure functions of (seed, step, chunk); epochs visit every example once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from flowforge.train.data import BatchStream


class ListDataset(Dataset):
    """A plain map-style dataset (the slow path) with items (x, label) or x."""

    def __init__(self, x, y=None):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].numpy() if self.y is None else (self.x[i], self.y[i])


def reference_positions(n: int, seed: int, count: int) -> list[int]:
    """The documented stream, built the slow obvious way: epoch permutations back to back."""
    out, epoch = [], 0
    while len(out) < count:
        state = np.random.SeedSequence([seed, 2, epoch]).generate_state(1, np.uint64)[0]
        out += torch.randperm(n, generator=torch.Generator().manual_seed(int(state))).tolist()
        epoch += 1
    return out[:count]


def test_dataset_stream_equals_epoch_permutations():
    n, B, steps = 10, 4, 9  # 36 positions: batches straddle epoch boundaries
    x, y = torch.arange(n).double().unsqueeze(1), torch.arange(n) * 10
    fast = BatchStream(TensorDataset(x, y), seed=3, batch_size=B)
    slow = BatchStream(ListDataset(x, y), seed=3, batch_size=B)
    got = []
    for step in range(steps):
        for j in range(2):  # K = 2 chunks of 2
            xf, yf = fast.chunk(step, j, 2)
            xs, ys = slow.chunk(step, j, 2)
            assert torch.equal(xf, xs) and torch.equal(yf, ys) and torch.equal(yf, 10 * xf[:, 0])
            got += xf[:, 0].long().tolist()
    assert got == reference_positions(n, 3, steps * B)
    for e in range(3):  # every example exactly once per epoch
        assert sorted(got[e * n : (e + 1) * n]) == list(range(n))
    # Chunks are contiguous slices of the global batch, whatever K is.
    whole = fast.chunk(5, 0, 4)[0]
    assert torch.equal(whole, torch.cat([fast.chunk(5, 0, 2)[0], fast.chunk(5, 1, 2)[0]]))


def test_items_without_labels_and_bad_items():
    x = torch.randn(6, 3)
    xs, labels = BatchStream(ListDataset(x), seed=0, batch_size=6).chunk(0, 0, 6)
    assert labels is None and sorted(xs[:, 0].tolist()) == sorted(x[:, 0].tolist())
    bad = BatchStream(lambda n, g: (x, x, x), seed=0, batch_size=2)
    with pytest.raises(ValueError, match="returned a 3-tuple"):
        bad.chunk(0, 0, 2)
    with pytest.raises(ValueError, match="empty Dataset"):
        BatchStream(TensorDataset(torch.zeros(0, 2)), seed=0, batch_size=2)


def test_sampler_chunks_are_pure_functions_of_seed_step_chunk():
    def sampler(n, generator):
        return torch.rand(n, generator=generator), None

    stream = BatchStream(sampler, seed=1, batch_size=8)
    a = stream.chunk(4, 1, 4)[0]
    assert torch.equal(a, BatchStream(sampler, seed=1, batch_size=8).chunk(4, 1, 4)[0])
    others = [stream.chunk(4, 0, 4)[0], stream.chunk(5, 1, 4)[0]]
    others.append(BatchStream(sampler, seed=2, batch_size=8).chunk(4, 1, 4)[0])
    assert all(not torch.equal(a, o) for o in others)
    assert torch.equal(BatchStream(lambda n, g: sampler(n, g)[0], 1, 8).chunk(4, 1, 4)[0], a)

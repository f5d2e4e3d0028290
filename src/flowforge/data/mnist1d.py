"""MNIST-1D: 1-D signals of length 40 in 10 classes, from the ``mnist1d`` package's generator.

Each class is a hand-made 12-point template that the generator pads, dilates, rescales,
translates, adds correlated and i.i.d. noise to, shears and resamples to 40 points; the whole set
is then centred and scaled to unit standard deviation. We call the generator itself
(``mnist1d.data.make_dataset``) with its default arguments except the number of samples and the
seed, so nothing is downloaded and no cache file is written.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

__all__ = ["make_mnist1d"]


def make_mnist1d(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Generate ``n`` MNIST-1D signals and their digit labels, offline and deterministically.

    The generator draws ``n // 10`` signals per class and shuffles them; for ``n`` not a multiple
    of 10 we generate the next multiple of 10 and keep the first ``n`` of the shuffled set.
    The package seeds NumPy's and Python's global generators; we save and restore both, so the
    caller's random state is untouched.

    Args:
        n: number of signals, >= 1.
        seed: seed of the generator; the same ``(n, seed)`` gives the same signals.

    Returns:
        ``(x, labels)``: x (n, 1, 40) float32, standardised over the generated set; labels (n,)
        int64 in 0..9.

    References:
        Scaling Down Deep Learning with MNIST-1D (Greydanus & Kobak, 2024), arXiv:2011.14439.

    Example:
        >>> x, y = make_mnist1d(20, seed=0)
        >>> tuple(x.shape), x.dtype, sorted(y.tolist()) == sorted(list(range(10)) * 2)
        ((20, 1, 40), torch.float32, True)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of signals.")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            "make_mnist1d needs the mnist1d package (pure Python, no torch), from the "
            "[mnist1d] extra: pip install 'flowforge[mnist1d]'."
        ) from e
    args = get_dataset_args()  # the package defaults; its download URL is never used
    args.num_samples = -(-n // 10) * 10  # next multiple of 10: n // 10 per class
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # seeds the global generators itself
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    xs = np.concatenate([data["x"], data["x_test"]])[:n]  # (n, 40), already shuffled
    ys = np.concatenate([data["y"], data["y_test"]])[:n]  # (n,)
    x = torch.from_numpy(xs.astype(np.float32)).unsqueeze(1)  # (n, 1, 40)
    return x, torch.from_numpy(ys.astype(np.int64))

import random

import numpy as np
import pytest
import torch

from flowforge.data.mnist1d import make_mnist1d


def test_shapes_balance_and_standardisation():
    x, y = make_mnist1d(200, seed=0)
    assert x.shape == (200, 1, 40) and x.dtype == torch.float32
    assert y.shape == (200,) and y.dtype == torch.long
    # The generator draws n // 10 signals per class.
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10
    # It standardises the whole set (float64 before our cast to float32).
    assert abs(x.double().mean().item()) < 1e-6 and abs(x.double().std().item() - 1) < 1e-2


def test_deterministic_and_seeded():
    x, y = make_mnist1d(50, seed=1)
    x2, y2 = make_mnist1d(50, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, make_mnist1d(50, seed=2)[0])


def test_reference_equality_with_package_generator():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 30, 5
    ref = make_dataset(args)
    x, y = make_mnist1d(30, seed=5)
    np.testing.assert_allclose(x[:, 0].numpy(), np.concatenate([ref["x"], ref["x_test"]]), 1e-6)
    assert y.tolist() == np.concatenate([ref["y"], ref["y_test"]]).tolist()


def test_offline_no_files_and_global_rng_untouched(tmp_path, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("make_mnist1d must not touch the network")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    x, _ = make_mnist1d(13, seed=0)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert x.shape == (13, 1, 40)  # n not a multiple of 10: the first 13 of 20
    assert list(tmp_path.iterdir()) == []  # no cache file written


def test_bad_n():
    with pytest.raises(ValueError, match="n=0"):
        make_mnist1d(0)

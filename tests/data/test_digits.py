import pytest
import torch
import torch.nn.functional as F

from flowforge.data.digits import load_digits_tensor, split_indices


def test_all_digits_range_and_classes():
    x, y = load_digits_tensor()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.long
    # Raw values are 0..16 and both extremes occur, so v / 8 - 1 spans [-1, 1] exactly.
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    # Every value is v / 8 - 1 for an integer v in 0..16.
    v = (x + 1) * 8
    assert torch.equal(v, v.round())
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_upsampling_keeps_range_and_mean():
    x8, y8 = load_digits_tensor(8)
    x16, y16 = load_digits_tensor(16)
    assert x16.shape == (1797, 1, 16, 16) and torch.equal(y8, y16)
    # Bilinear weights are convex: values stay in [-1, 1].
    assert x16.min() >= -1.0 and x16.max() <= 1.0
    # Upsampling by 2 (align_corners=False) samples at i / 2 - 1/4 with edge clamping, giving
    # weights (1, 3/4, 1/4) to an edge pixel and (1/4, 3/4, 3/4, 1/4) to an interior one: each
    # input pixel's weights sum to 2 per axis, so the mean is kept exactly (float32 rounding).
    diff = (x16.mean((1, 2, 3)) - x8.mean((1, 2, 3))).abs()
    assert diff.max() < 1e-6
    # Reference: the same interpolate call on the native images.
    ref = F.interpolate(x8, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(x16, ref)


def test_split_sizes_disjoint_stratified_deterministic():
    x_all, y_all = load_digits_tensor()
    x_tr, y_tr = load_digits_tensor(split="train", seed=3)
    x_te, y_te = load_digits_tensor(split="test", seed=3)
    assert len(x_tr) + len(x_te) == 1797
    assert abs(len(x_te) - 0.2 * 1797) <= 10  # rounding per class, at most 0.5 per class
    # Stratified: each class's test share is within rounding of 0.2.
    share = torch.bincount(y_te, minlength=10) / torch.bincount(y_all)
    assert (share - 0.2).abs().max() < 0.5 / 174 + 1e-9
    tr, te = split_indices(y_all, 0.2, seed=3)
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(1797))
    assert torch.equal(x_tr, x_all[tr]) and torch.equal(y_te, y_all[te])
    # Same seed -> same split; another seed -> another split.
    assert torch.equal(x_te, load_digits_tensor(split="test", seed=3)[0])
    assert not torch.equal(te, split_indices(y_all, 0.2, seed=4)[1])


@pytest.mark.parametrize(
    "kwargs, word", [({"size": 12}, "size=12"), ({"split": "val"}, "split='val'")]
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_digits_tensor(**kwargs)


def test_bad_test_fraction():
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        split_indices(torch.zeros(4, dtype=torch.long), 1.5)

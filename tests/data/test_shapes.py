import math

import pytest
import torch

from flowforge.data.shapes import SHAPE_CLASSES, make_shapes, rasterise_shapes


def _shapes(n, seed=0, **kwargs):
    return make_shapes(n, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_shapes_dtypes_ranges_and_determinism():
    x, m, y = _shapes(64)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert m.shape == (64, 32, 32) and m.dtype == torch.long
    assert y.shape == (64,) and y.dtype == torch.long
    assert x.min() >= -1 and x.max() <= 1
    assert set(m.unique().tolist()) <= {0, 1, 2, 3} and set(y.tolist()) <= {1, 2, 3}
    assert SHAPE_CLASSES[1:] == ("circle", "square", "triangle")
    x2, m2, y2 = _shapes(64)
    assert torch.equal(x, x2) and torch.equal(m, m2) and torch.equal(y, y2)
    assert not torch.equal(x, _shapes(64, seed=1)[0])


def test_colour_consistency():
    # Background pixels share one colour, no shape pixel has it, and each distinct shape colour
    # (continuous random, so distinct shapes differ) sits on pixels of a single class.
    x, m, _ = _shapes(200)
    for img, mask in zip(x, m, strict=True):
        pix = img.flatten(1).T  # (H * W, 3)
        cls = mask.flatten()  # (H * W,)
        colours, inv = pix.unique(dim=0, return_inverse=True)
        bg = inv[cls == 0].unique()
        assert len(bg) == 1 and not (inv[cls > 0] == bg).any()
        # Every shape channel differs from the background by >= 0.4 (documented ranges).
        if (cls > 0).any():
            assert ((pix[cls > 0] - colours[bg]).abs().min() >= 0.4 - 1e-6).item()
        for c in inv[cls > 0].unique():
            assert len(cls[inv == c].unique()) == 1


def test_single_shape_labels_match_masks():
    x, m, y = _shapes(300, num_shapes=(1, 1))
    for mask, label in zip(m, y, strict=True):
        assert mask.unique().tolist() == [0, label.item()]
    assert torch.bincount(y, minlength=4)[1:].min() > 70  # about 100 of each of the 3 classes


def test_multi_shape_label_is_largest_visible_class():
    # The label's shape is the largest visible one of at most 3, so it alone covers at least a
    # third of all shape pixels, and its class at least as much.
    x, m, y = _shapes(300, num_shapes=(2, 3))
    for mask, label in zip(m, y, strict=True):
        assert 3 * (mask == label).sum() >= (mask > 0).sum()
    # Measured mean share 0.76 (min 0.36) with seed 0; 0.5 leaves room for other seeds.
    share = torch.stack(
        [(mask == label).sum() / (mask > 0).sum() for mask, label in zip(m, y, strict=True)]
    )
    assert share.mean() > 0.5


@pytest.mark.parametrize("kind, area", [(1, math.pi), (2, 4.0), (3, 2.0)])
def test_rasterised_area_matches_closed_form(kind, area):
    # Area of circle pi r^2, square (2r)^2 and triangle 2 r^2; pixel-centre counting errs by
    # O(perimeter) pixels at most, so the relative error is O(1 / r): with r = 40 about 1e-2.
    r = 40.0
    g = torch.Generator().manual_seed(0)
    centres = 64.0 + torch.rand(8, 1, 2, generator=g, dtype=torch.float64) * 10  # off-grid
    radii = torch.full((8, 1), r, dtype=torch.float64)
    kinds = torch.full((8, 1), kind)
    _, mask, inst = rasterise_shapes(
        kinds, centres, radii, torch.ones(8, 1, 3), torch.zeros(8, 3), 140
    )
    counted = (mask == kind).flatten(1).sum(1).double()
    assert torch.equal(mask > 0, inst == 0)
    assert ((counted / (area * r**2) - 1).abs() < 0.02).all()


def test_occlusion_topmost_wins():
    kinds = torch.tensor([[2, 1]])  # a square, then a circle on top of its centre
    centres = torch.tensor([[[8.0, 8.0], [8.0, 8.0]]])
    radii = torch.tensor([[6.0, 3.0]])
    colours = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    img, mask, inst = rasterise_shapes(kinds, centres, radii, colours, -torch.ones(1, 3), 16)
    assert mask[0, 8, 8] == 1 and inst[0, 8, 8] == 1 and img[0, 1, 8, 8] == 1
    assert mask[0, 3, 3] == 2 and img[0, 0, 3, 3] == 1
    assert torch.equal(img[0, 1] == 1, mask[0] == 1)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"num_shapes": (2, 1)}, "num_shapes"), ({"size": 4}, "size=4"), ({"n": 0}, "n=0")],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_shapes(**{"n": 2, **kwargs})

"""Known-pixel masks: hole sizes, determinism, the condition channels and exact pasting."""

import pytest
import torch

from flowforge.data.masks import box_masks, inpainting_condition, paste_known


def test_box_holes_are_single_rectangles_within_the_side_range():
    m = box_masks(500, 16, generator=torch.Generator().manual_seed(0), min_side=0.25)
    hole = m[:, 0] == 0  # (n, H, W)
    rows, cols = hole.any(2), hole.any(1)  # (n, H), (n, W)
    h, w = rows.sum(1), cols.sum(1)
    assert ((h >= 4) & (h <= 11) & (w >= 4) & (w <= 11)).all()  # round(0.25*16)..round(0.7*16)
    assert torch.equal(hole.flatten(1).sum(1), h * w)  # a full rectangle, nothing else
    # Every position of the hole is reachable: corners touch all four borders somewhere.
    assert rows[:, 0].any() and rows[:, -1].any() and cols[:, 0].any() and cols[:, -1].any()


def test_same_seed_same_masks():
    a = box_masks(8, 8, generator=torch.Generator().manual_seed(3))
    b = box_masks(8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_condition_and_paste():
    x = torch.randn(3, 2, 8, 8)
    m = box_masks(3, 8, generator=torch.Generator().manual_seed(1))
    c = inpainting_condition(x, m)
    assert torch.equal(c[:, :2], x * m) and torch.equal(c[:, 2:], 2 * m - 1)
    out = paste_known(torch.zeros_like(x), x, m)
    assert torch.equal(out * m, x * m) and torch.equal(out * (1 - m), torch.zeros_like(x))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="min_side"):
        box_masks(2, 8, min_side=0.8, max_side=0.5)
    with pytest.raises(ValueError, match="known has shape"):
        inpainting_condition(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 4, 4))

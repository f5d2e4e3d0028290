"""InpaintingLoss: the network sees exactly cat(x * m, 2 m - 1) for masks drawn from the stream."""

import pytest
import torch

from flowforge.data.masks import box_masks, inpainting_condition
from flowforge.losses.inpainting import InpaintingLoss


def _recorder():
    seen = []

    def loss(model, x_1, cond, generator):
        seen.append(cond)
        return x_1.flatten(1).sum(1)

    return loss, seen


def test_condition_is_the_masked_image_and_mask_of_the_drawn_masks():
    loss, seen = _recorder()
    x = torch.randn(6, 3, 8, 8)
    InpaintingLoss(loss)(None, x, None, torch.Generator().manual_seed(5))
    m = box_masks(6, 8, generator=torch.Generator().manual_seed(5))  # same stream, same masks
    torch.testing.assert_close(seen[0], inpainting_condition(x, m), rtol=0, atol=0)
    assert (m == 0).flatten(1).any(1).all() and (m == 1).flatten(1).any(1).all()


def test_p_full_one_hides_every_pixel():
    loss, seen = _recorder()
    x = torch.randn(4, 1, 8, 8)
    InpaintingLoss(loss, p_full=1.0)(None, x, None, torch.Generator().manual_seed(0))
    assert torch.equal(seen[0][:, :1], torch.zeros_like(x))  # masked image all zero
    assert torch.equal(seen[0][:, 1:], -torch.ones_like(x))  # mask all -1 (unknown)


def test_data_with_its_own_condition_is_refused():
    loss, _ = _recorder()
    with pytest.raises(ValueError, match="builds the condition from the images"):
        InpaintingLoss(loss)(None, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="p_full"):
        InpaintingLoss(loss, p_full=1.5)

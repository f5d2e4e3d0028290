import math

import numpy as np
import pytest
import torch

from flowforge.metrics.images import (
    class_accuracy,
    knn_radii,
    known_pixel_error,
    manifold_coverage,
    mean_iou,
    per_class_iou,
    precision_recall,
)


def naive_precision_recall(real, fake, k):
    # Slow obvious version: full distance matrices, sort each row, index k skips the point itself.
    def radii(x):
        return torch.cdist(x, x).sort(dim=1).values[:, k]

    def inside(ref, r, q):
        return torch.tensor([any((q_i - ref).norm(dim=1) <= r) for q_i in q]).double().mean()

    return inside(real, radii(real), fake).item(), inside(fake, radii(fake), real).item()


# ---------------------------------------------------------------- precision / recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_equals_naive_loops(k):
    g = torch.Generator().manual_seed(k)
    real = torch.randn(60, 3, generator=g)
    fake = torch.randn(45, 3, generator=g) + 1.5
    expected = naive_precision_recall(real, fake, k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case that exercises both branches
    assert precision_recall(real, fake, k=k, chunk_size=7) == expected  # chunks of 7 rows
    assert precision_recall(real.numpy(), fake.numpy(), k=k) == expected


def test_knn_radii_exclude_self():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=2, chunk_size=3).tolist() == [3.0, 2.0, 3.0, 6.0]
    # A duplicate is a neighbour at distance 0.
    assert knn_radii(torch.tensor([[0.0], [0.0], [5.0]]), k=1).tolist() == [0.0, 0.0, 5.0]
    covered = manifold_coverage(x, knn_radii(x, k=1), torch.tensor([[8.0], [11.5], [-1.0]]))
    assert covered.tolist() == [True, False, True]  # 8 <= 7 + 4, 11.5 > 11, -1 <= 0 + 1


def test_identical_sets_give_one_one():
    x = torch.randn(300, 5)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_disjoint_sets_give_zero_zero():
    # Unit-scale clusters 100 apart: every k-NN radius is ~1, far below the gap.
    real = torch.randn(200, 4)
    fake = torch.randn(200, 4) + 100
    assert precision_recall(real, fake) == (0.0, 0.0)


def _two_modes(g, n=400, d=2, gap=100.0):
    mode_a = torch.randn(n, d, generator=g)
    mode_b = torch.randn(n, d, generator=g) + gap
    return mode_a, mode_b


def test_fake_on_half_the_modes_exact_construction():
    # Fakes are the real points of mode A moved by 1e-4 (far below the smallest 3-NN radius):
    # each fake sits inside its own real ball (precision 1), each mode-A real point inside its
    # fake twin's ball, and mode B (100 away) is uncovered: recall = 400 / 800 = 0.5 exactly.
    g = torch.Generator().manual_seed(0)
    mode_a, mode_b = _two_modes(g)
    jitter = 1e-4 * torch.randn(mode_a.shape, generator=g)
    fake = mode_a + jitter
    real_radii, fake_radii = knn_radii(mode_a), knn_radii(fake)
    assert jitter.norm(dim=1).max() < 0.5 * min(real_radii.min(), fake_radii.min())  # premise
    assert precision_recall(torch.cat([mode_a, mode_b]), fake) == (1.0, 0.5)


def test_fake_on_half_the_modes_fresh_samples():
    # Fresh fakes from mode A only. Mode B's radii (~0.1) and A's cannot bridge the gap of 100,
    # so (i) precision is exactly that of mode A alone and (ii) recall is exactly half of mode
    # A's recall. A matched 2-D distribution is nearly covered by the union of 3-NN balls (the
    # paper's default k): measured here (0.99, 0.97), so (0.99, 0.485) on two modes (float32:
    # 0.985, 0.48). Recall <= 0.5 is exact; the floors 0.9 and 0.45 (coverage >= 0.9) leave
    # room for the seed.
    g = torch.Generator().manual_seed(0)
    mode_a, mode_b = _two_modes(g)
    fake = torch.randn(400, 2, generator=g)
    p_one, r_one = precision_recall(mode_a, fake)
    p_two, r_two = precision_recall(torch.cat([mode_a, mode_b]), fake)
    assert p_two == p_one and r_two == r_one / 2
    assert p_two >= 0.9
    assert 0.45 <= r_two <= 0.5


def test_precision_recall_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="fake_features has 2"):
        precision_recall(x, torch.randn(10, 2))
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(x, torch.randn(3, 3), k=3)
    with pytest.raises(ValueError, match="k=0"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="chunk_size=0"):
        precision_recall(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(x, torch.full((10, 3), float("nan")))


# ---------------------------------------------------------------- accuracy


def test_class_accuracy_logits_and_predictions():
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.0, 5.0], [0.3, 0.2, 0.1], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2, 1, 1])  # argmax = [0, 2, 0, 1]: 3 of 4 right
    assert class_accuracy(logits, labels) == 0.75
    assert class_accuracy(logits.argmax(1), labels) == 0.75
    assert class_accuracy(np.array([1, 1, 1, 1]), labels.numpy()) == 0.5
    assert class_accuracy(torch.tensor([0.0, 2.0, 1.0, 1.0]), labels) == 1.0  # float indices
    with pytest.raises(ValueError, match="non-integer"):
        class_accuracy(torch.tensor([0.5, 2.0, 1.0, 1.0]), labels)
    with pytest.raises(ValueError, match="labels has 3"):
        class_accuracy(logits, labels[:3])
    with pytest.raises(ValueError, match=r"\(N, K\) logits"):
        class_accuracy(logits[None], labels)


# ---------------------------------------------------------------- IoU


def test_iou_hand_computed():
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    true = torch.tensor([[0, 1, 1], [1, 1, 2]])
    # class 0: pred {(0,0),(0,1)}, true {(0,0)}: I = 1, U = 2 -> 1/2
    # class 1: pred {(0,2),(1,0)}, true {(0,1),(0,2),(1,0),(1,1)}: I = 2, U = 4 -> 1/2
    # class 2: pred {(1,1),(1,2)}, true {(1,2)}: I = 1, U = 2 -> 1/2; class 3 absent -> NaN
    iou = per_class_iou(pred, true, num_classes=4)
    assert iou[:3].tolist() == [0.5, 0.5, 0.5] and math.isnan(iou[3])
    assert mean_iou(pred, true, num_classes=4) == 0.5  # the absent class is skipped

    pred = torch.tensor([[0, 0, 0, 1]])
    true = torch.tensor([[0, 1, 1, 1]])
    # class 0: pred {0, 1, 2}, true {0}: 1/3; class 1: pred {3}, true {1, 2, 3}: 1/3.
    assert per_class_iou(pred, true, 2).tolist() == [1 / 3, 1 / 3]
    # A class only in the prediction counts with IoU 0.
    assert mean_iou(torch.tensor([2, 1]), torch.tensor([1, 1]), 3) == pytest.approx(0.25)


def test_iou_perfect_prediction():
    masks = torch.randint(0, 5, (3, 8, 8))
    assert mean_iou(masks, masks.clone(), num_classes=5) == 1.0
    assert mean_iou(masks.numpy(), masks.numpy(), num_classes=7) == 1.0  # 5, 6 absent: skipped


def test_iou_ignore_index():
    pred = torch.tensor([0, 1, 1, 0, 1])
    true = torch.tensor([0, 1, 255, 255, 0])
    # Pixels 2 and 3 are unlabelled. Left: pred [0, 1, 1], true [0, 1, 0]:
    # class 0: I = 1, U = 2; class 1: I = 1, U = 2.
    assert per_class_iou(pred, true, 2, ignore_index=255).tolist() == [0.5, 0.5]
    # ignore_index inside [0, K): its pixels and its own IoU are left out.
    pred = torch.tensor([0, 1, 2, 2])
    true = torch.tensor([0, 1, 1, 2])  # left: pred [1, 2, 2], true [1, 1, 2]
    iou = per_class_iou(pred, true, 3, ignore_index=0)
    assert math.isnan(iou[0]) and iou[1:].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="no labelled pixel"):
        mean_iou(pred, torch.zeros(4, dtype=torch.long), 3, ignore_index=0)


def test_iou_errors():
    with pytest.raises(ValueError, match="true_masks has shape"):
        mean_iou(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="outside"):
        mean_iou(torch.tensor([0, 3]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="outside"):
        mean_iou(torch.tensor([0, 1]), torch.tensor([0, 255]), 2)  # 255 without ignore_index
    with pytest.raises(ValueError, match="num_classes=0"):
        mean_iou(torch.tensor([0]), torch.tensor([0]), 0)


# ---------------------------------------------------------------- inpainting


def test_known_pixel_error_exact_values():
    reference = torch.zeros(2, 1, 2, 2)
    samples = reference.clone()
    samples[0, 0, 0, 0] = 0.25  # known
    samples[1, 0, 1, 1] = -0.75  # known
    samples[1, 0, 1, 0] = 10.0  # unknown: must not count
    known = torch.tensor([[True, False], [False, True]])
    assert known_pixel_error(samples, reference, known) == 0.75
    assert known_pixel_error(samples, reference, known[None, None].int()) == 0.75
    # A per-sample mask (B, 1, H, W): image 1's (1, 1) pixel is unknown now.
    per_sample = torch.zeros(2, 1, 2, 2)
    per_sample[0, 0, 0, 0] = 1
    assert known_pixel_error(samples, reference, per_sample) == 0.25
    assert known_pixel_error(reference, reference, torch.ones(2, 2)) == 0.0
    # float32 inputs are compared in float64: 0.1f - 0 is exactly float32(0.1).
    x32 = torch.full((1, 1, 1, 1), 0.1, dtype=torch.float32)
    expected = float(np.float32(0.1))
    assert known_pixel_error(x32, torch.zeros_like(x32), torch.ones(1, 1)) == expected


def test_known_pixel_error_errors():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="reference has shape"):
        known_pixel_error(x, torch.zeros(2, 1, 4, 3), torch.ones(4, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        known_pixel_error(x, x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="no pixel"):
        known_pixel_error(x, x, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="other than 0 and 1"):
        known_pixel_error(x, x, torch.full((4, 4), 0.5))

"""Pareto utilities: dominance against brute force, hypervolume against closed forms and exact
cell counting, IGD at and off the front, the Branin-Currin front."""

from __future__ import annotations

import itertools

import pytest
import torch

from flowforge.gfn import (
    BraninCurrin,
    HyperGrid,
    hypervolume,
    igd,
    non_dominated,
    objective_values,
    pareto_front,
)


def brute_non_dominated(y: torch.Tensor) -> list[bool]:
    rows = y.tolist()
    return [
        not any(
            all(b >= a for a, b in zip(p, q, strict=True))
            and any(b > a for a, b in zip(p, q, strict=True))
            for q in rows
        )
        for p in rows
    ]


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_non_dominated_equals_brute_force(K):
    g = torch.Generator().manual_seed(K)
    y = torch.randint(0, 5, (60, K), generator=g).double()  # many ties and duplicates
    assert non_dominated(y).tolist() == brute_non_dominated(y)


def test_non_dominated_one_objective_keeps_every_maximum():
    assert non_dominated(torch.tensor([1.0, 3.0, 2.0, 3.0])).tolist() == [False, True, False, True]


def covered_cells(points: torch.Tensor, side: int) -> int:
    """Exact HV of integer points in [0, side]^K with ref 0: the unit cells [c, c + 1] that some
    point dominates (c + 1 <= p in every coordinate)."""
    K = points.shape[1]
    count = 0
    for c in itertools.product(range(side), repeat=K):
        upper = torch.tensor(c, dtype=torch.float64) + 1
        count += bool((points >= upper).all(1).any())
    return count


@pytest.mark.parametrize("K, n", [(2, 12), (3, 10), (4, 8)])
def test_hypervolume_equals_exact_cell_count(K, n):
    g = torch.Generator().manual_seed(10 + K)
    points = torch.randint(0, 6, (n, K), generator=g).double()
    assert hypervolume(points, [0.0] * K) == pytest.approx(covered_cells(points, 5), abs=1e-9)


def test_hypervolume_closed_forms():
    n = 7  # staircase (i, n + 1 - i): area sum_i i = n (n + 1) / 2
    stairs = torch.tensor([[i, n + 1 - i] for i in range(1, n + 1)], dtype=torch.float64)
    assert hypervolume(stairs, [0.0, 0.0]) == pytest.approx(n * (n + 1) / 2)
    box = torch.tensor([[0.5, 2.0, 3.0]])
    assert hypervolume(box, [0.0, 1.0, -1.0]) == pytest.approx(0.5 * 1.0 * 4.0)
    a, b = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])  # inclusion-exclusion
    union = a.prod() + b.prod() - torch.minimum(a, b).prod()
    assert hypervolume(torch.stack([a, b]), [0.0] * 3) == pytest.approx(union.item())
    # dominated points and points below the reference add nothing
    more = torch.cat([stairs, torch.tensor([[1.0, 1.0], [-3.0, 50.0], [2.0, -1.0]])])
    assert hypervolume(more, [0.0, 0.0]) == pytest.approx(n * (n + 1) / 2)
    with pytest.raises(ValueError, match="one reference value per objective"):
        hypervolume(stairs, [0.0, 0.0, 0.0])


def test_hypervolume_matches_monte_carlo_in_continuous_3d():
    """Continuous points: the exact HV is within 4 standard errors of a 200k-sample estimate."""
    g = torch.Generator().manual_seed(3)
    y = torch.rand(15, 3, generator=g, dtype=torch.float64)
    u = torch.rand(200_000, 3, generator=g, dtype=torch.float64)
    inside = (y[None] >= u[:, None]).all(-1).any(-1).double()
    se = (inside.std() / len(u) ** 0.5).item()
    assert abs(hypervolume(y, [0.0] * 3) - inside.mean().item()) < 4 * se


def test_igd_is_zero_on_the_front_and_the_shift_off_it():
    front = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    assert igd(front, front) == 0.0
    assert igd(torch.cat([front, front + 5]), front) == 0.0  # extra samples do not count
    shift = torch.tensor([0.03, -0.04], dtype=torch.float64)
    assert igd(front + shift, front) == pytest.approx(0.05)  # every point moved by |shift|
    assert igd(front[:1], front) == pytest.approx((0 + 0.5**0.5 + 2**0.5) / 3)
    with pytest.raises(ValueError, match="same number of objectives"):
        igd(torch.zeros(3, 3), front)


def test_branin_currin_front_is_the_brute_force_front():
    env = HyperGrid(ndim=2, height=8)
    u = BraninCurrin(height=8)
    states, values = pareto_front(env, u)
    x = env.all_terminal_states()
    y = u(x)
    expected = [s for s, keep in zip(x.tolist(), brute_non_dominated(y), strict=True) if keep]
    assert states.tolist() == expected
    assert torch.equal(values, u(states))
    assert y.min() >= 0 and y.max() < 1.01  # both objectives in about [0, 1]
    assert y[:, 0].argmax() != y[:, 1].argmax()  # they conflict: the front has several points
    assert len(states) == 6


def test_objective_values_reject_wrong_shapes():
    x = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected \(4,\) or \(4, K\)"):
        objective_values(lambda x: torch.zeros(3), x)
    with pytest.raises(TypeError, match="return a"):
        objective_values(lambda x: [0.0] * 4, x)
    with pytest.raises(ValueError, match="non-finite"):
        objective_values(lambda x: torch.full((4,), float("nan")), x)

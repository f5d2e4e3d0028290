"""Environment invariants: masks, step / backward_step inverses, rewards, exact log Z."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.gfn import (
    BitSequence,
    Env,
    HyperGrid,
    MLPPolicy,
    PolicyConfig,
    SetGeneration,
    StateDAG,
    exact_flows,
    log_elementary_symmetric,
    match_rows,
    sample_trajectories,
)


def envs() -> list[Env]:
    modes = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 0, 1, 0]])
    return [
        HyperGrid(ndim=2, height=4),
        HyperGrid(ndim=3, height=3, R0=0.1),
        BitSequence(modes, beta=3.0),
        SetGeneration(6, 3, torch.linspace(-1.0, 2.0, 6)),
    ]


ENV_IDS = ["hypergrid2x4", "hypergrid3x3", "bits5", "sets6c3"]


@pytest.fixture(params=range(4), ids=ENV_IDS)
def env(request) -> Env:
    return envs()[request.param]


def all_states(env: Env) -> torch.Tensor:
    return torch.cat(StateDAG(env).levels)


def test_step_and_backward_step_are_inverse(env):
    """backward_step(step(s, a), a) = s for every valid move, and step undoes every valid
    backward move; each mask agrees with the other side's."""
    s = all_states(env)
    parent, a = env.forward_mask(s)[:, :-1].nonzero(as_tuple=True)
    child = env.step(s[parent], a)
    assert torch.equal(env.backward_step(child, a), s[parent])
    assert env.backward_mask(child)[torch.arange(len(a)), a].all()
    node, b = env.backward_mask(s).nonzero(as_tuple=True)
    back = env.backward_step(s[node], b)
    assert torch.equal(env.step(back, b), s[node])
    assert env.forward_mask(back)[torch.arange(len(b)), b].all()


def test_masks_and_terminal_states(env):
    """s_0 has no parent and every other state has one; every state has a valid action; the
    exit is valid exactly at ``all_terminal_states``; complete objects only exit."""
    s = all_states(env)
    s0 = env.initial_states(1)
    assert not env.backward_mask(s0).any()
    others = (s != s0).flatten(1).any(1)
    assert env.backward_mask(s[others]).any(1).all()
    mask = env.forward_mask(s)
    assert mask.shape == (len(s), env.n_actions) and mask.any(1).all()
    can_exit = s[mask[:, env.exit_action]]
    terminal = env.all_terminal_states()
    assert len(can_exit) == len(terminal)
    match_rows(can_exit, terminal)  # raises unless the two sets agree
    complete = env.is_terminal(s)
    assert (mask[complete].sum(1) == 1).all()
    assert env.encode(s).shape == (len(s), env.encoding_dim)


def test_exact_log_z_enumeration_equals_the_flow_program(env):
    """log sum_x R(x) by enumeration equals log F(s_0) of the backward program over the DAG
    (uniform P_B), and the exact forward policy normalises at every state."""
    flows = exact_flows(StateDAG(env))
    assert flows.log_z == pytest.approx(env.log_partition(), abs=1e-10)
    assert torch.logsumexp(flows.log_pf, 1).abs().max() < 1e-10


def test_hypergrid_reward_is_the_standard_one():
    """2-D, H = 8: 4 modes (coordinates in {1, 6}) with R0 + R1 + R2, 12 more outer states with
    R0 + R1, the other 48 with R0; at H = 11, a = |1/10 - 0.5| = 0.4 is inside the band (the
    tolerance of torchgfn's comparisons) and a = 0.3 is not."""
    env = HyperGrid(ndim=2, height=8)
    r = env.log_reward(env.all_terminal_states()).exp()
    values, n = torch.unique(r.round(decimals=6), return_counts=True)
    counts = dict(zip(values.tolist(), n.tolist(), strict=True))
    assert counts == {0.001: 48, 0.501: 12, 2.501: 4}
    assert env.log_partition() == pytest.approx(math.log(4 * 2.501 + 12 * 0.501 + 48 * 0.001))
    wide = HyperGrid(ndim=1, height=11)
    r = wide.log_reward(torch.tensor([[1], [2], [9]])).exp()
    assert r.tolist() == pytest.approx([2.501, 0.501, 2.501])


def test_bit_sequence_reward_and_partial_energy():
    env = BitSequence(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), beta=2.0)
    x = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]])
    assert env.log_reward(x).tolist() == pytest.approx([-0.5, -1.0, 0.0])
    prefix = torch.tensor([[1, 0, -1, -1]])  # one mismatch against either mode so far
    assert env.state_energy(prefix).tolist() == pytest.approx([0.5])
    assert len(env.all_terminal_states()) == 16


def test_set_marginals_and_log_z_by_symmetric_polynomials_equal_brute_force():
    """n = 9, k = 4 random energies: log Z = log e_k(w), P(x) and P(i in x) from the
    symmetric-polynomial program equal the sums over all 126 sets."""
    g = torch.Generator().manual_seed(0)
    env = SetGeneration(9, 4, torch.randn(9, generator=g, dtype=torch.float64))
    x = env.all_terminal_states()
    assert len(x) == math.comb(9, 4)
    log_r = env.log_reward(x)
    assert env.log_partition() == pytest.approx(torch.logsumexp(log_r, 0).item(), abs=1e-12)
    p = torch.softmax(log_r, 0)
    assert torch.allclose(env.log_prob(x).exp(), p, atol=1e-14)
    marginals = env.inclusion_marginals()
    assert torch.allclose(marginals, (p[:, None] * x).sum(0), atol=1e-12)
    assert marginals.sum().item() == pytest.approx(4.0)
    # e_j of 1..4 are the coefficients of (1 + t)(1 + 2t)(1 + 3t)(1 + 4t)
    log_e = log_elementary_symmetric(torch.arange(1, 5, dtype=torch.float64).log(), 4)
    assert log_e.exp().tolist() == pytest.approx([1.0, 10.0, 35.0, 50.0, 24.0])


def test_invalid_actions_are_errors():
    env = HyperGrid(ndim=2, height=3)
    with pytest.raises(ValueError, match="not a valid forward move at state \\[2, 0\\]"):
        env.step(torch.tensor([[2, 0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="exit action ends a trajectory"):
        env.step(torch.tensor([[0, 0]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="not a valid backward move"):
        env.backward_step(torch.tensor([[0, 1]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected \\(1,\\)"):
        env.step(torch.tensor([[0, 0]]), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "reward, match",
    [
        (lambda x: torch.zeros(len(x)), "zero, negative or non-finite at 9 of 9 states"),
        (lambda x: x[:, 0].double() - 1.0, "zero, negative or non-finite at 6 of 9 states"),
        (lambda x: torch.full((len(x),), float("nan")), "non-finite"),
        (lambda x: torch.ones(len(x), 1), "returned shape \\(9, 1\\) for 9 states; expected"),
    ],
    ids=["zero", "negative", "nan", "shape"],
)
def test_bad_rewards_are_clear_errors(reward, match):
    env = HyperGrid(ndim=2, height=3, reward_fn=reward)
    with pytest.raises(ValueError, match=match):
        env.log_reward(env.all_terminal_states())
    with pytest.raises(ValueError, match="floor|shape"):
        StateDAG(env).target()


def test_zero_reward_states_are_named():
    env = HyperGrid(ndim=2, height=3, reward_fn=lambda x: (x.sum(1) > 0).double())
    with pytest.raises(ValueError, match="e.g. \\[\\[0, 0\\]\\]"):
        env.log_reward(torch.tensor([[0, 0], [1, 0]]))
    with pytest.raises(ValueError, match="R0=0"):
        HyperGrid(R0=0.0)
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        SetGeneration(4, 2, torch.zeros(3))


class NoMoveAtCorner(Env):
    """A broken hypergrid whose forward mask leaves state (1, 1) without any action."""

    def __init__(self) -> None:
        self.grid = HyperGrid(ndim=2, height=3)
        self.state_shape, self.n_actions = self.grid.state_shape, self.grid.n_actions
        self.max_steps, self.encoding_dim = self.grid.max_steps, self.grid.encoding_dim

    def initial_states(self, n, device="cpu"):
        return self.grid.initial_states(n, device)

    def forward_mask(self, states):
        return self.grid.forward_mask(states) & ~(states == 1).all(1, keepdim=True)

    def backward_mask(self, states):
        return self.grid.backward_mask(states)

    def step(self, states, actions):
        return self.grid.step(states, actions)

    def backward_step(self, states, actions):
        return self.grid.backward_step(states, actions)

    def log_reward(self, x):
        return self.grid.log_reward(x)

    def encode(self, states):
        return self.grid.encode(states)


def test_a_mask_without_valid_action_is_an_error():
    env = NoMoveAtCorner()
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
    with pytest.raises(ValueError, match="no valid action at state \\[1, 1\\]"):
        for seed in range(20):  # some trajectory walks through (1, 1)
            g = torch.Generator().manual_seed(seed)
            sample_trajectories(env, policy, 64, epsilon=1.0, generator=g)

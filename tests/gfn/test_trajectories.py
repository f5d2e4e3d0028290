"""Sampling, re-evaluation, prefixes, the replay buffer and the evaluation metrics."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.gfn import (
    HyperGrid,
    MLPPolicy,
    PolicyConfig,
    ReplayBuffer,
    SetGeneration,
    StateDAG,
    TabularPolicy,
    Trajectories,
    diversity,
    empirical_distribution,
    empirical_l1,
    evaluate_trajectories,
    exact_flows,
    l1_distance,
    log_z_error,
    mean_state,
    modes_found,
    sample_trajectories,
    terminal_distribution,
    top_k_reward,
)


def test_sampled_trajectories_are_consistent_with_the_environment_and_the_policy():
    """Moves follow env.step, the final state repeats after the exit, the stored log-probs equal
    the re-evaluated ones, and the transition energies add up to -log R(x) - E(s_0)."""
    env = SetGeneration(6, 3, torch.linspace(-1.0, 2.0, 6))
    policy = MLPPolicy(
        PolicyConfig(env.encoding_dim, env.n_actions, hidden=16, backward="learned")
    )
    traj = sample_trajectories(env, policy, 32, generator=torch.Generator().manual_seed(0))
    assert traj.terminated.all() and (traj.n_steps == 4).all()  # 3 moves and the exit
    for t in range(traj.T):
        move = traj.moves[t]
        assert torch.equal(env.step(traj.states[t][move], traj.actions[t][move]),
                           traj.states[t + 1][move])  # fmt: skip
        assert torch.equal(traj.states[t + 1][~move], traj.states[t][~move])
    ev = evaluate_trajectories(env, policy, traj)
    assert torch.allclose(ev.log_pf, traj.log_pf, atol=1e-12)
    assert torch.allclose(ev.log_pb, traj.log_pb, atol=1e-12)
    x = traj.last_states
    assert torch.allclose(traj.log_rewards, env.log_reward(x))
    E_0 = env.state_energy(env.initial_states(1))
    assert torch.allclose(traj.energies.sum(0), -traj.log_rewards - E_0, atol=1e-12)


def test_monte_carlo_frequencies_match_the_dag_program():
    """20000 samples of a random MLP policy on the 4 x 4 grid: empirical L1 to the exact
    terminal distribution of the DAG program below 0.05 (the sampling floor for 16 objects is
    about sqrt(2 * 16 / (pi * 20000)) = 0.023)."""
    env = HyperGrid(ndim=2, height=4)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
    traj = sample_trajectories(env, policy, 20_000, generator=torch.Generator().manual_seed(1))
    p_exact = terminal_distribution(StateDAG(env), policy)
    assert p_exact.sum().item() == pytest.approx(1.0, abs=1e-10)
    assert l1_distance(empirical_distribution(env, traj.last_states), p_exact) < 0.05


def test_exploration_and_temperature_make_first_actions_uniform():
    """A tabular policy that always moves along coordinate 0: epsilon = 1 or a huge temperature
    gives each of the 3 first actions probability 1/3; epsilon = 0.3 gives 0.1 to the others."""
    env = HyperGrid(ndim=2, height=4)
    policy = TabularPolicy(env, torch.cat(StateDAG(env).levels))
    with torch.no_grad():
        policy.logits[:, 0] = 30.0
    g = torch.Generator().manual_seed(2)

    def first(**kwargs) -> torch.Tensor:
        traj = sample_trajectories(env, policy, 6000, generator=g, **kwargs)
        return torch.bincount(traj.actions[0], minlength=3) / 6000

    assert torch.allclose(first(epsilon=1.0), torch.full((3,), 1 / 3), atol=0.03)
    assert torch.allclose(first(temperature=1e6), torch.full((3,), 1 / 3), atol=0.03)
    assert torch.allclose(first(epsilon=0.3), torch.tensor([0.8, 0.1, 0.1]), atol=0.03)
    assert first()[0] > 0.999
    with pytest.raises(ValueError, match="epsilon"):
        first(epsilon=1.5)


def test_truncate_and_cat():
    env = HyperGrid(ndim=2, height=4)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
    g = torch.Generator().manual_seed(3)
    traj = sample_trajectories(env, policy, 16, generator=g)
    keep = torch.randint(0, 4, (16,), generator=g)
    prefix = traj.truncate(keep)
    assert torch.equal(prefix.n_steps, torch.minimum(keep, traj.n_steps))
    assert torch.equal(prefix.terminated, keep >= traj.n_steps)
    assert (prefix.log_rewards[~prefix.terminated] == 0).all()
    batch = torch.arange(16)
    assert torch.equal(prefix.last_states, traj.states[prefix.n_steps, batch])
    assert (prefix.actions[~prefix.valid] == -1).all()
    short = sample_trajectories(env, policy, 4, generator=g)
    short = short.truncate(torch.ones(4, dtype=torch.long))
    both = Trajectories.cat([traj, short])
    assert len(both) == 20 and both.T == max(traj.T, short.T)
    assert torch.equal(both.index(torch.arange(16, 20)).last_states, short.last_states)


def test_replay_buffer_keeps_unique_objects_fifo_and_draws_by_reward():
    env = HyperGrid(ndim=2, height=3)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
    g = torch.Generator().manual_seed(4)
    traj = sample_trajectories(env, policy, 400, epsilon=0.5, generator=g)
    buffer = ReplayBuffer(capacity=100, priority="reward")
    buffer.add(traj)
    buffer.add(traj.truncate(torch.ones(400, dtype=torch.long)))  # prefixes are skipped
    assert len(buffer) == 9  # every cell of the 3 x 3 grid, once
    stored = buffer.storage.last_states
    assert len(torch.unique(stored, dim=0)) == 9
    drawn = buffer.sample(20_000, generator=g)
    freq = empirical_distribution(env, drawn.last_states)
    assert l1_distance(freq, StateDAG(env).target()) < 0.05
    fifo = ReplayBuffer(capacity=5, unique=False)
    fifo.add(traj.index(torch.arange(3)))
    fifo.add(traj.index(torch.arange(3, 7)))
    assert torch.equal(fifo.storage.last_states, traj.index(torch.arange(2, 7)).last_states)


def test_conditioning_input_is_concatenated_and_checked():
    env = HyperGrid(ndim=2, height=3)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8, cond_dim=2))
    cond = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    traj = sample_trajectories(env, policy, 8, cond=cond)
    assert torch.equal(traj.cond, cond)
    ev = evaluate_trajectories(env, policy, traj)
    assert torch.allclose(ev.log_pf, traj.log_pf, atol=1e-12)
    p = terminal_distribution(StateDAG(env), policy, cond=torch.tensor([1.0, 0.0]))
    assert p.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cond_dim=2"):
        sample_trajectories(env, policy, 8)


def test_metrics_closed_forms():
    env = HyperGrid(ndim=2, height=8)
    x = env.all_terminal_states()
    log_r = env.log_reward(x)
    assert modes_found(x, log_r, math.log(2.0)) == 4
    assert top_k_reward(x, log_r, 4) == pytest.approx(2.501)
    assert top_k_reward(x, log_r, 8) == pytest.approx((4 * 2.501 + 4 * 0.501) / 8)
    assert diversity(torch.tensor([[0, 0], [0, 1], [1, 1]])) == pytest.approx(4 / 3)
    flows = exact_flows(StateDAG(env))
    assert log_z_error(env, flows.log_z) < 1e-10
    g = torch.Generator().manual_seed(5)
    exact = torch.multinomial(StateDAG(env).target(), 50_000, True, generator=g)
    assert empirical_l1(env, x[exact]) < 0.05  # floor sqrt(2 * 64 / (pi * 5e4)) = 0.029
    sets = SetGeneration(5, 2, torch.linspace(0.0, 1.0, 5))
    xs = sets.all_terminal_states()
    assert torch.allclose(mean_state(xs, sets.log_prob(xs).exp()), sets.inclusion_marginals())

"""The balance losses: zero at the exact solution, equal to slow references, gradients."""

from __future__ import annotations

import pytest
import torch

from flowforge.gfn import (
    BitSequence,
    DetailedBalance,
    Env,
    ForwardLookingDB,
    ForwardLookingSubTB,
    HyperGrid,
    MLPPolicy,
    PolicyConfig,
    SetGeneration,
    StateDAG,
    SubTrajectoryBalance,
    TabularPolicy,
    TrajectoryBalance,
    evaluate_trajectories,
    exact_flows,
    sample_trajectories,
    terminal_distribution,
)


def envs() -> list[Env]:
    return [
        HyperGrid(ndim=2, height=5),
        HyperGrid(ndim=3, height=3, R0=0.1),
        BitSequence(torch.tensor([[1, 1, 0, 0, 1], [0, 1, 0, 1, 0]]), beta=3.0),
        SetGeneration(7, 3, torch.linspace(-1.0, 2.0, 7)),
    ]


@pytest.fixture(params=range(4), ids=["hypergrid2x5", "hypergrid3x3", "bits5", "sets7c3"])
def env(request) -> Env:
    return envs()[request.param]


def exact_policy(env: Env, forward_looking: bool = False) -> TabularPolicy:
    """The exact GFlowNet of ``env`` with the uniform P_B: P_F, F (or F~ = F exp(E)) and Z."""
    flows = exact_flows(StateDAG(env))
    policy = TabularPolicy(env, flows.states)
    log_flow = flows.log_flow
    if forward_looking:
        log_flow = log_flow + env.state_energy(flows.states).double()  # F~(s) = F(s) exp(E(s))
    with torch.no_grad():
        finite = torch.isfinite(flows.log_pf)
        policy.logits.copy_(torch.where(finite, flows.log_pf, torch.zeros_like(flows.log_pf)))
        policy.log_flow.copy_(log_flow)
        policy.log_z.fill_(flows.log_z)
    return policy


def test_every_loss_is_zero_at_the_exact_solution(env):
    """The exact flows of the DAG program balance: TB, DB and SubTB residuals vanish on sampled
    trajectories, and the policy's terminal distribution is R / Z."""
    policy = exact_policy(env)
    traj = sample_trajectories(env, policy, 64, generator=torch.Generator().manual_seed(0))
    for loss in (TrajectoryBalance(env), DetailedBalance(env), SubTrajectoryBalance(env)):
        assert loss(policy, traj).max() < 1e-18, type(loss).__name__
    dag = StateDAG(env)
    assert torch.allclose(terminal_distribution(dag, policy), dag.target(), atol=1e-12)
    mixed = traj.truncate(torch.randint(0, env.max_steps + 2, (64,)))
    assert DetailedBalance(env)(policy, mixed).max() < 1e-18


def test_forward_looking_losses_are_zero_at_the_exact_solution_on_prefixes(env):
    """With F~(s) = F(s) exp(E(s)), FL-DB and FL-SubTB vanish on complete trajectories and on
    prefixes of any length; F~ = 1 at complete objects is the boundary the losses enforce."""
    policy = exact_policy(env, forward_looking=True)
    traj = sample_trajectories(env, policy, 64, generator=torch.Generator().manual_seed(1))
    prefixes = traj.truncate(torch.randint(0, env.max_steps + 1, (64,)))
    assert not prefixes.terminated.all()
    for loss in (ForwardLookingDB(env), ForwardLookingSubTB(env, lam=0.9)):
        assert loss(policy, traj).max() < 1e-18
        assert loss(policy, prefixes).max() < 1e-18


def test_a_wrong_solution_is_not_balanced():
    """Negative controls: shifting one state flow breaks DB; all flows shifted together break
    DB only at the exit (the boundary F(x) = R(x)); FL without the energies breaks FL-DB."""
    env = HyperGrid(ndim=2, height=4)
    policy = exact_policy(env)
    traj = sample_trajectories(env, policy, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        policy.log_flow.add_(1.0)
    assert DetailedBalance(env)(policy, traj).min() > 0.5
    assert TrajectoryBalance(env)(policy, traj).max() < 1e-18  # TB reads log Z, not F
    assert ForwardLookingDB(env)(exact_policy(env), traj).mean() > 1e-2


def test_subtb_equals_a_slow_double_loop():
    """The vectorised SubTB(lambda) equals the sum over (i, j) written out per trajectory."""
    env = HyperGrid(ndim=2, height=4)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
    traj = sample_trajectories(env, policy, 6, generator=torch.Generator().manual_seed(3))
    traj = traj.truncate(torch.tensor([0, 1, 2, 9, 9, 9]))  # prefixes and complete ones
    lam = 0.7
    with torch.no_grad():
        fast = SubTrajectoryBalance(env, lam)(policy, traj)
        ev = evaluate_trajectories(env, policy, traj)
    for b in range(len(traj)):
        L = int(traj.n_steps[b])
        log_f = ev.log_flow[: L + 1, b].clone()
        if traj.terminated[b]:
            log_f[L] = traj.log_rewards[b]  # the exit node carries R(x)
        num = den = 0.0
        for i in range(L + 1):
            for j in range(i + 1, L + 1):
                r = log_f[i] - log_f[j] + (ev.log_pf[i:j, b] - ev.log_pb[i:j, b]).sum()
                num, den = num + lam ** (j - i) * r**2, den + lam ** (j - i)
        slow = num / den if den else torch.zeros(())
        assert fast[b].item() == pytest.approx(float(slow), rel=1e-10, abs=1e-12)


def test_subtb_with_small_lambda_is_the_mean_db_and_tb_is_the_formula():
    env = SetGeneration(6, 3, torch.linspace(0.0, 1.0, 6))
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
    traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(4))
    subtb = SubTrajectoryBalance(env, lam=1e-9)(policy, traj)
    db = DetailedBalance(env)(policy, traj)
    assert torch.allclose(subtb, db / traj.n_steps, rtol=1e-6)
    tb = TrajectoryBalance(env)(policy, traj)
    by_hand = (policy.log_z + traj.log_pf.sum(0) - traj.log_rewards - traj.log_pb.sum(0)) ** 2
    assert torch.allclose(tb, by_hand, atol=1e-12)
    with torch.no_grad():
        flow = TrajectoryBalance(env, log_z="flow")(policy, traj)
        policy.log_z.fill_(evaluate_trajectories(env, policy, traj).log_flow[0, 0].item())
    assert torch.allclose(flow, TrajectoryBalance(env)(policy, traj), atol=1e-12)


def test_gradients_reach_every_parameter():
    env = HyperGrid(ndim=2, height=4)
    config = PolicyConfig(env.encoding_dim, env.n_actions, hidden=16, backward="learned")
    policy = MLPPolicy(config)
    traj = sample_trajectories(env, policy, 16, generator=torch.Generator().manual_seed(5))
    value = TrajectoryBalance(env)(policy, traj).mean() + DetailedBalance(env)(policy, traj).mean()
    value.backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_losses_refuse_what_they_cannot_learn_from():
    env = HyperGrid(ndim=2, height=4)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
    traj = sample_trajectories(env, policy, 4, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match="TB needs complete trajectories"):
        TrajectoryBalance(env)(policy, traj.truncate(torch.ones(4, dtype=torch.long)))
    bits = BitSequence(torch.tensor([[0, 1, 1]]), reward_fn=lambda x: x.sum(1).double() + 1)
    policy = MLPPolicy(PolicyConfig(bits.encoding_dim, bits.n_actions, hidden=8))
    traj = sample_trajectories(bits, policy, 4)
    assert traj.energies is None
    with pytest.raises(ValueError, match="need transition energies"):
        ForwardLookingDB(bits)(policy, traj)
    with pytest.raises(ValueError, match="lam"):
        SubTrajectoryBalance(bits, lam=0.0)

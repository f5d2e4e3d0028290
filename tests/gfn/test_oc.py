"""Outcome-conditioned GFlowNets: relabelling, the conditional balance losses at the exact
conditional solution, the batched success DP, the marginal theorem behind fine-tuning, and
card 24's check 4 (pre-training success, then fine-tuning against TB from scratch)."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.gfn import (
    HyperGrid,
    MarginalDistillation,
    MarginalFlowRegression,
    MLPPolicy,
    OutcomeConditionedBalance,
    Policy,
    PolicyConfig,
    PolicyOutput,
    StateDAG,
    TabularPolicy,
    TrajectoryBalance,
    exact_flows,
    exact_l1,
    hindsight_relabel,
    match_rows,
    outcome_log_reward,
    outcome_terminal_distributions,
    sample_trajectories,
    success_rate,
    terminal_distribution,
)

LOG_FAILURE = -10.0


class ExactOutcomePolicy(Policy):
    """The exact OC-GFN of a small grid: for every outcome y, the P_F and F(s | y) of the reward
    R(x | y) = 1[x = y] + exp(LOG_FAILURE) 1[x != y] with the uniform P_B (backward DP)."""

    def __init__(self, env: HyperGrid) -> None:
        super().__init__()
        keys, logits, flows = [], [], []
        for y in env.all_terminal_states():

            def reward(x, y=y):
                return torch.where((x == y).all(1), 1.0, math.exp(LOG_FAILURE))

            grid = HyperGrid(env.ndim, env.height, reward_fn=reward)
            exact = exact_flows(StateDAG(grid))
            cond = env.encode(y[None]).expand(len(exact.states), -1)
            keys.append(torch.cat([env.encode(exact.states), cond], 1))
            finite = torch.isfinite(exact.log_pf)
            logits.append(torch.where(finite, exact.log_pf, torch.zeros_like(exact.log_pf)))
            flows.append(exact.log_flow)
        self.register_buffer("keys", torch.cat(keys))
        self.register_buffer("logits", torch.cat(logits))
        self.register_buffer("log_flow", torch.cat(flows))
        self.log_z = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> PolicyOutput:
        rows = match_rows(self.keys, torch.cat([x, cond.to(x)], 1))
        return PolicyOutput(self.logits[rows], None, self.log_flow[rows])


def oc_mlp(env: HyperGrid, hidden: int = 16) -> MLPPolicy:
    config = PolicyConfig(
        env.encoding_dim, env.n_actions, hidden=hidden, depth=2, cond_dim=env.encoding_dim
    )
    return MLPPolicy(config)


def rollouts(env, policy, n, seed, epsilon=0.0):
    g = torch.Generator().manual_seed(seed)
    X = env.all_terminal_states()
    y = X[torch.randint(len(X), (n,), generator=g)]
    return y, sample_trajectories(env, policy, n, cond=env.encode(y), epsilon=epsilon, generator=g)


def test_hindsight_relabelling_turns_every_trajectory_into_a_success():
    env = HyperGrid(ndim=2, height=4)
    y, traj = rollouts(env, oc_mlp(env), 64, seed=0)
    before = outcome_log_reward(env, traj.last_states, traj.cond, LOG_FAILURE)
    assert (before == LOG_FAILURE).any()  # an untrained policy misses most outcomes
    assert torch.equal(hindsight_relabel(env, traj, 0.0).cond, traj.cond)
    relabelled = hindsight_relabel(env, traj, 1.0)
    assert torch.equal(relabelled.cond, env.encode(traj.last_states))
    after = outcome_log_reward(env, relabelled.last_states, relabelled.cond, LOG_FAILURE)
    assert (after == 0).all()
    half = hindsight_relabel(env, traj, 0.5, generator=torch.Generator().manual_seed(1))
    changed = (half.cond != traj.cond).any(1).double().mean()
    assert 0.2 < changed < 0.6  # about half relabelled, minus those that already succeeded


def test_balance_losses_vanish_at_the_exact_conditional_solution():
    """The exact OC flows balance every trajectory, successes and (epsilon-explored) failures,
    for DB and SubTB; the teleported DB is zero on successes and positive on failures."""
    env = HyperGrid(ndim=2, height=3)
    policy = ExactOutcomePolicy(env)
    _, traj = rollouts(env, policy, 128, seed=2, epsilon=0.5)
    fail = outcome_log_reward(env, traj.last_states, traj.cond, LOG_FAILURE) < 0
    assert fail.any() and (~fail).any()
    for objective in ("db", "subtb"):
        loss = OutcomeConditionedBalance(env, objective, log_failure=LOG_FAILURE)
        assert loss(policy, traj).max() < 1e-18, objective
    teleport = OutcomeConditionedBalance(env, "db_teleport", log_failure=LOG_FAILURE)(policy, traj)
    assert teleport[~fail].max() < 1e-18
    moved = traj.moves.any(0)
    assert (teleport[fail & moved] > 1.0).all()


def test_batched_outcome_dp_equals_one_dp_per_outcome():
    env = HyperGrid(ndim=2, height=4)
    dag = StateDAG(env)
    policy = oc_mlp(env)
    X = env.all_terminal_states()
    batched = outcome_terminal_distributions(dag, policy, X)
    for m, y in enumerate(X):
        single = terminal_distribution(dag, policy, cond=env.encode(y[None])[0])
        assert torch.allclose(batched[m], single, atol=1e-12)
    small = HyperGrid(ndim=2, height=3)
    exact = outcome_terminal_distributions(
        StateDAG(small), ExactOutcomePolicy(small), small.all_terminal_states()
    )
    floor = 8 * math.exp(LOG_FAILURE)  # the 8 failures of each outcome share this mass
    expected = torch.full((9,), 1 / (1 + floor), dtype=torch.float64)
    assert torch.allclose(exact.diagonal(), expected)


def test_the_reward_weighted_marginal_of_exact_oc_flows_is_the_gflownet_of_r():
    """Theorem 4.2: P_F(a | s) ∝ sum_y R(y) F(s -> a | y) with the exact OC flows samples
    R / Z (up to the failure floor exp(-10)); the regression loss is zero at that target."""
    env = HyperGrid(ndim=2, height=3, R0=0.1)
    dag = StateDAG(env)
    oc = ExactOutcomePolicy(env)
    X = env.all_terminal_states()
    states = torch.cat(dag.levels)
    regression = MarginalFlowRegression(env, oc)
    target = regression.target(states, X, env.log_reward(X).double() + math.log(len(X)))
    marginal = TabularPolicy(env, states)
    with torch.no_grad():
        marginal.logits.copy_(torch.where(torch.isfinite(target), target, 0.0))
    assert exact_l1(dag, marginal) < 1e-3
    traj = sample_trajectories(env, marginal, 32, generator=torch.Generator().manual_seed(3))
    assert regression(marginal, traj, X, env.log_reward(X)).max() < 1e-18


def test_distillation_is_minimised_by_the_weighted_mixture_of_oc_policies():
    """At each visited state the weighted CE has zero gradient at P_phi = sum_b w_b P_F(. | s,
    y_b) / sum_b w_b (the states each rollout visits), the Monte Carlo marginal policy."""
    env = HyperGrid(ndim=2, height=3, R0=0.1)
    oc = ExactOutcomePolicy(env)
    y, traj = rollouts(env, oc, 48, seed=4)
    log_w = env.log_reward(y).double()
    T, B = traj.T, len(traj)
    flat = traj.states[:-1].reshape(T * B, -1)
    out = oc(env.encode(flat), traj.cond.repeat(T, 1))
    teacher = torch.where(env.forward_mask(flat), out.logits, -torch.inf).softmax(-1)
    w = (log_w + math.log(1 + 8 * math.exp(LOG_FAILURE))).exp().repeat(T)  # R(y) F(s_0 | y)
    w = w * traj.valid.flatten()  # (T B,) only the states where an action was taken
    states = torch.cat(StateDAG(env).levels)
    rows = match_rows(states, flat)
    num = torch.zeros(len(states), env.n_actions, dtype=torch.float64)
    num.index_add_(0, rows, w[:, None] * teacher)
    student = TabularPolicy(env, states)
    seen = num.sum(1) > 0
    with torch.no_grad():
        mix = num[seen] / num[seen].sum(1, keepdim=True)
        student.logits[seen] = mix.clamp(min=1e-300).log()
    MarginalDistillation(env, oc)(student, traj, log_w).mean().backward()
    assert student.logits.grad.abs().max() < 1e-12


def test_oc_losses_refuse_bad_input():
    env = HyperGrid(ndim=2, height=3)
    traj = sample_trajectories(env, MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions)), 4)
    with pytest.raises(ValueError, match="cond = encode"):
        hindsight_relabel(env, traj, 0.5)
    with pytest.raises(ValueError, match="cond = encode"):
        OutcomeConditionedBalance(env)(oc_mlp(env), traj)
    with pytest.raises(ValueError, match="log_failure"):
        OutcomeConditionedBalance(env, log_failure=0.0)
    with pytest.raises(ValueError, match="fraction"):
        hindsight_relabel(env, traj, 1.5)
    with pytest.raises(ValueError, match="objective"):
        OutcomeConditionedBalance(env, objective="teleport")
    _, oc_traj = rollouts(env, oc_mlp(env), 4, seed=5)
    with pytest.raises(ValueError, match="one log R"):
        MarginalDistillation(env, oc_mlp(env))(oc_mlp(env), oc_traj, torch.zeros(3))


def pretrain(env: HyperGrid, steps: int, seed: int) -> MLPPolicy:
    """OC-GFN pre-training: outcomes uniform over the grid, half of each batch relabelled."""
    torch.manual_seed(seed)
    policy = oc_mlp(env, hidden=64)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    loss = OutcomeConditionedBalance(env)  # SubTB, lambda = 5
    X = env.all_terminal_states()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y = X[torch.randint(len(X), (64,), generator=g)]
        traj = sample_trajectories(env, policy, 64, cond=env.encode(y), generator=g)
        value = loss(policy, hindsight_relabel(env, traj, 0.5, generator=g)).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return policy.requires_grad_(False)


def fine_tune(env, oc, steps, batch, seed) -> MLPPolicy:
    """Distil the marginal: outcomes y ~ q uniform over the grid (one reward query each)."""
    torch.manual_seed(seed)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=64, depth=2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    objective = MarginalDistillation(env, oc)
    X = env.all_terminal_states()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y = X[torch.randint(len(X), (batch,), generator=g)]
        traj = sample_trajectories(env, oc, batch, cond=env.encode(y), generator=g)
        value = objective(policy, traj, env.log_reward(y) + math.log(len(X))).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return policy


def tb_from_scratch(env, steps, batch, seed) -> MLPPolicy:
    torch.manual_seed(seed)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=64, depth=2))
    net = [p for name, p in policy.named_parameters() if name != "log_z"]
    opt = torch.optim.Adam([{"params": net, "lr": 1e-2}, {"params": [policy.log_z], "lr": 0.1}])
    tb = TrajectoryBalance(env)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        traj = sample_trajectories(env, policy, batch, epsilon=0.05, generator=g)
        value = tb(policy, traj).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return policy


def test_oc_pretraining_reaches_outcomes_and_fine_tunes_faster_than_tb():
    """Card check 4 on the 7 x 7 hypergrid (49 outcomes, the standard reward with R0 = 1e-3 as
    the new reward). Pre-training: 250 updates of 64 trajectories; the exact mean success rate
    P_T(y | y) and the sampled one (490 rollouts) are both >= 0.9. Measured at seeds 0-4:
    exact 0.950, 0.951, 0.966, 0.961, 0.956 (worst outcome 0.86-0.92), sampled 0.949-0.978.

    Fine-tuning: 50 updates of 16 trajectories (800 reward queries) distilling the marginal
    give an exact L1 to R / Z below 0.8 and below 0.8 x that of TB from scratch with the same
    network, learning rate, updates and trajectories. Measured at seeds 0-4: distilled 0.58,
    0.73, 0.55, 0.75, 0.53 against TB 1.47, 1.12, 1.34, 1.04, 0.90 (ratios 0.40, 0.65, 0.41,
    0.72, 0.59; both start at 1.62). The paper's regression form (``MarginalFlowRegression``)
    reached only 1.15-1.50 at this budget, see gfn/oc_finetune.py. The advantage is at small
    budgets: at seed 0 with 1600 trajectories distilled 0.35 vs TB 0.40, with 3200 0.59 vs
    0.09 (the OC model's ~5 % failures bound the fine-tuned L1 at CPU-scale pre-training)."""
    torch.set_default_dtype(torch.float32)
    env = HyperGrid(ndim=2, height=7)
    dag = StateDAG(env)
    X = env.all_terminal_states()
    oc = pretrain(env, 250, seed=0)
    exact = outcome_terminal_distributions(dag, oc, X).diagonal()
    assert exact.mean() >= 0.9
    g = torch.Generator().manual_seed(7)
    assert success_rate(env, oc, X.repeat(10, 1), generator=g) >= 0.9
    fine_tuned = exact_l1(dag, fine_tune(env, oc, 50, 16, seed=100))
    scratch = exact_l1(dag, tb_from_scratch(env, 50, 16, seed=200))
    assert fine_tuned < 0.8
    assert fine_tuned < 0.8 * scratch

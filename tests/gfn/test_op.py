"""Order-preserving GFlowNets: the order losses in closed form, the TB-implied reward, and card
24's check 3 (learning from comparisons only) at CPU scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from flowforge.gfn import (
    BraninCurrin,
    HyperGrid,
    MLPPolicy,
    OrderPreservingTB,
    PolicyConfig,
    StateDAG,
    TabularPolicy,
    TrajectoryBalance,
    exact_flows,
    non_dominated,
    pairwise_order_loss,
    sample_trajectories,
    set_order_loss,
    tb_log_reward,
    terminal_distribution,
)


def exact_policy(env: HyperGrid) -> TabularPolicy:
    """The exact TB solution with the uniform P_B (P_F and Z from the backward DP)."""
    flows = exact_flows(StateDAG(env))
    policy = TabularPolicy(env, flows.states)
    with torch.no_grad():
        finite = torch.isfinite(flows.log_pf)
        policy.logits.copy_(torch.where(finite, flows.log_pf, torch.zeros_like(flows.log_pf)))
        policy.log_z.fill_(flows.log_z)
    return policy


def test_pairwise_loss_closed_form():
    """log 2 for equal log R^ or tied u; softplus(-d) for a pair in the order of u, softplus(d)
    against it (d = |log R^_i - log R^_j|); equals the two-way softmax cross-entropy of the
    reference code."""
    log_r = torch.tensor([0.3, -1.2, 0.7, 0.7])
    u = torch.tensor([2.0, 1.0, 5.0, 5.0 + 1e-9])  # 2 and 3 tie within tie_tol
    partner = torch.tensor([1, 0, 3, 2])
    loss = pairwise_order_loss(log_r, u, partner)
    d = log_r[0] - log_r[1]  # u agrees: x_0 is better and has the larger log R^
    assert loss[:2].tolist() == pytest.approx([F.softplus(-d).item()] * 2)
    against = pairwise_order_loss(log_r[:2], torch.tensor([1.0, 2.0]), partner[:2])
    assert against.tolist() == pytest.approx([F.softplus(d).item()] * 2)
    assert loss[2:].tolist() == pytest.approx([math.log(2)] * 2)
    equal = pairwise_order_loss(torch.zeros(4), u, partner)
    assert equal.tolist() == pytest.approx([math.log(2)] * 4)
    logits = torch.stack([log_r, log_r[partner]], 1)
    p = torch.tensor([1.0, 0.0, 0.5, 0.5])
    ce = F.cross_entropy(logits, torch.stack([p, 1 - p], 1), reduction="none")
    assert torch.allclose(loss, ce)


def test_pairwise_gradient_pushes_the_better_object_up():
    log_r = torch.zeros(2, requires_grad=True)
    pairwise_order_loss(log_r, torch.tensor([3.0, 1.0]), torch.tensor([1, 0])).mean().backward()
    assert log_r.grad[0] < 0 < log_r.grad[1]  # descent raises log R^ of the better x
    tie = torch.zeros(2, requires_grad=True)
    pairwise_order_loss(tie, torch.tensor([1.0, 1.0]), torch.tensor([1, 0])).sum().backward()
    assert tie.grad.abs().max() == 0  # log 2 is the minimum for a tie


def test_set_loss_closed_form_and_gradient():
    """Mean = CE against the uniform target on the Pareto set; log B for equal log R^; descent
    raises the Pareto members and lowers the dominated ones."""
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [0.0, 0.0]])
    log_r = torch.zeros(5, requires_grad=True)
    loss = set_order_loss(log_r, u)
    assert loss.mean().item() == pytest.approx(math.log(5))
    loss.mean().backward()
    front = non_dominated(u)
    assert (log_r.grad[front] < 0).all() and (log_r.grad[~front] > 0).all()
    x = torch.randn(5)
    target = front.double() / front.sum()
    ref = F.cross_entropy(x[None], target[None].to(x))
    assert set_order_loss(x, u).mean().item() == pytest.approx(ref.item())


def test_tb_implied_reward_is_the_reward_at_the_exact_solution():
    """With the exact TB solution (uniform P_B), every trajectory's log R^ is log R(x); and for
    any policy the TB residual with R^ in place of R is zero (why OP-TB is the OP loss alone)."""
    env = HyperGrid(ndim=2, height=5)
    policy = exact_policy(env)
    traj = sample_trajectories(env, policy, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(tb_log_reward(env, policy, traj), traj.log_rewards, atol=1e-10)
    net = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
    traj = sample_trajectories(env, net, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traj.log_rewards = tb_log_reward(env, net, traj)
        assert TrajectoryBalance(env)(net, traj).max() < 1e-20


def test_op_loss_gradients_and_the_unidentified_log_z():
    """Gradients reach every network parameter; log Z gets exactly none (the order losses are
    invariant to a shift of every log R^)."""
    env = HyperGrid(ndim=2, height=4)
    config = PolicyConfig(env.encoding_dim, env.n_actions, hidden=16, backward="learned")
    for order in ("total", "pareto"):
        policy = MLPPolicy(config)
        traj = sample_trajectories(env, policy, 32, generator=torch.Generator().manual_seed(2))
        loss = OrderPreservingTB(env, lambda x: x.double() @ torch.tensor([1.0, 0.1]), order)
        loss(policy, traj, generator=torch.Generator().manual_seed(3)).mean().backward()
        for name, p in policy.named_parameters():
            if name == "log_z":
                assert p.grad.abs().item() < 1e-6, order
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, (order, name)


def test_op_clamp_and_bad_input():
    env = HyperGrid(ndim=2, height=4)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
    traj = sample_trajectories(env, policy, 16, generator=torch.Generator().manual_seed(4))
    u = BraninCurrin(height=4)
    clamped = OrderPreservingTB(env, u, order="pareto", max_loss=1e-3)(policy, traj)
    assert clamped.mean().item() == pytest.approx(1e-3)
    assert not clamped.requires_grad  # above the clamp the gradient is zero
    free = OrderPreservingTB(env, u, order="pareto", max_loss=None)(policy, traj)
    assert free.mean().item() > 1.0  # about log 16 at initialisation
    with pytest.raises(ValueError, match="order='pareto' for several objectives"):
        OrderPreservingTB(env, u)(policy, traj)
    with pytest.raises(ValueError, match="expected"):
        OrderPreservingTB(env, lambda x: torch.zeros(3))(policy, traj)
    with pytest.raises(ValueError, match="max_loss"):
        OrderPreservingTB(env, u, max_loss=0.0)
    with pytest.raises(ValueError, match="prefixes"):
        OrderPreservingTB(env, lambda x: x.sum(1))(policy, traj.truncate(torch.ones(16)))


def train_op(env, objective, order, steps, seed, epsilon=0.1, max_loss=100.0):
    torch.manual_seed(seed)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=64, depth=2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    loss = OrderPreservingTB(env, objective, order=order, max_loss=max_loss)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        traj = sample_trajectories(env, policy, 64, epsilon=epsilon, generator=g)
        value = loss(policy, traj, generator=g).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return policy


def test_op_learns_the_order_of_the_hypergrid_from_comparisons_only():
    """Card check 3 on the 8 x 8 hypergrid (R0 = 1e-3), 200 updates of 64 trajectories (12.8k),
    the loss reads only comparisons of R. The learned log R^(x) = log Z + log P_T(x) (exact DP)
    orders the states like R: Goodman-Kruskal gamma (pairs with different R) above 0.9, and the
    top 5 % (the 4 modes) all in the top decile of P_T (recall >= 0.8).

    The card's Spearman > 0.9 is out of reach here: R has three levels (48, 12 and 4 tied
    states), so even a perfect ranking has Spearman 0.756 against R; we ask for 90 % of that.
    Measured at seeds 0-4 (float32): Spearman 0.756, 0.725, 0.756, 0.756, 0.756; gamma 1.000,
    0.958, 1.000, 1.000, 1.000; recall 1.0 at every seed; P_T on the modes 0.72-0.80 (R / Z
    puts 0.62 there: the learned reward is sparser than R, as the paper describes)."""
    torch.set_default_dtype(torch.float32)
    env = HyperGrid(ndim=2, height=8)
    dag = StateDAG(env)
    log_r = dag.log_rewards()
    policy = train_op(env, lambda x: env.log_reward(x).double(), "total", 200, seed=0)
    p = terminal_distribution(dag, policy)
    log_r_hat = p.log() + policy.log_z.item()
    ranking = torch.argsort(torch.argsort(log_r, stable=True))  # a tie-free ranking of R
    perfect = spearmanr(log_r.numpy(), ranking.numpy()).correlation
    assert perfect == pytest.approx(0.756, abs=1e-3)
    assert spearmanr(log_r_hat.numpy(), log_r.numpy()).correlation > 0.9 * perfect
    s = (log_r_hat[:, None] - log_r_hat[None]).sign() * (log_r[:, None] - log_r[None]).sign()
    concordant, discordant = (s > 0).sum().item(), (s < 0).sum().item()
    assert (concordant - discordant) / (concordant + discordant) > 0.9
    top = log_r >= log_r.quantile(0.95)  # the 4 modes
    top_decile = torch.zeros_like(top)
    top_decile[p.topk(math.ceil(0.1 * len(p))).indices] = True
    assert (top & top_decile).sum() / top.sum() >= 0.8


def test_op_pareto_concentrates_on_the_front():
    """The set (Pareto) loss on Branin-Currin over the 8 x 8 grid, 100 updates of 64, without a
    clamp (as the multi-objective reference): the exact P_T on the 6 front states (9 % of the
    grid) rises from 0.11 to above 0.5. Measured at seeds 0-2: 0.68, 0.70, 0.68."""
    torch.set_default_dtype(torch.float32)
    env = HyperGrid(ndim=2, height=8)
    dag = StateDAG(env)
    u = BraninCurrin(height=8)
    front = non_dominated(u(dag.terminal_states))
    policy = train_op(env, u, "pareto", 100, seed=0, max_loss=None)
    assert terminal_distribution(dag, policy)[front].sum() > 0.5

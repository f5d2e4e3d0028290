"""Exact computations on an enumerable environment's state DAG, level by level.

The DAG is graded: level k holds the states k moves from s_0 (hypergrid: coordinate sum k;
sets: size k; bit strings: length k). Two dynamic programs run over it, vectorised per level:

    forward   P(s_0) = 1,  P(s') = sum_s P(s) P_F(s' | s),  P_T(x) = P(x) P_F(exit | x)
    backward  F(s) = R(s) 1[exit valid at s] + sum_{s'} F(s') P_B(s | s'),  Z = F(s_0)

The first gives the terminal distribution of a policy without sampling; the second, with the
uniform P_B, the exact flows and forward policy P_F(s' | s) = F(s') P_B(s | s') / F(s),
P_F(exit | s) = R(s) / F(s), under which every balance loss is zero.

References:
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowforge.gfn.env import Env, check_log_reward
from flowforge.gfn.policy import Policy, log_probs

__all__ = ["ExactFlows", "StateDAG", "exact_flows", "match_rows", "terminal_distribution"]


def match_rows(table: Tensor, query: Tensor) -> Tensor:
    """(M,) indices with ``table[idx] == query`` row by row, for states (N, ...) and (M, ...).

    Raises:
        ValueError: when a query row is not in the table.

    Example:
        >>> match_rows(torch.tensor([[0, 1], [1, 0], [1, 1]]), torch.tensor([[1, 1], [0, 1]]))
        tensor([2, 0])
    """
    t, q = table.flatten(1), query.flatten(1)
    _, inverse = torch.unique(torch.cat([t, q]), dim=0, return_inverse=True)
    lookup = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=t.device)
    lookup[inverse[: len(t)]] = torch.arange(len(t), device=t.device)
    idx = lookup[inverse[len(t) :]]
    if (idx < 0).any():
        missing = query[int((idx < 0).nonzero()[0])].tolist()
        raise ValueError(f"state {missing} is not in the table.")
    return idx


def _scatter_logsumexp(values: Tensor, index: Tensor, n: int) -> Tensor:
    """(n,) log sum_{e: index[e] = i} exp(values[e]); -inf for empty groups."""
    m = torch.full((n,), -torch.inf, dtype=values.dtype, device=values.device)
    m = m.scatter_reduce(0, index, values, "amax")
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.zeros_like(m).index_add_(0, index, (values - safe[index]).exp())
    return safe + s.log()


class StateDAG:
    """The levels and edges of an enumerable environment, built once by breadth-first search.

    Attributes:
        env: the environment.
        levels: list of (N_k, *state_shape) states k moves from s_0.
        edges: per level k < K - 1, ``(parent, action, child)`` (E_k,) indices of the moves
            from level k into level k + 1.
        terminal_states: (N,) ``env.all_terminal_states()``, the order of distributions.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> dag = StateDAG(HyperGrid(ndim=2, height=3))
        >>> [len(level) for level in dag.levels]
        [1, 2, 3, 2, 1]
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        level = env.initial_states(1)
        self.levels: list[Tensor] = [level]
        self.edges: list[tuple[Tensor, Tensor, Tensor]] = []
        for _ in range(env.max_steps):
            parent, action = env.forward_mask(level)[:, :-1].nonzero(as_tuple=True)
            if parent.numel() == 0:
                break
            children = env.step(level[parent], action)
            level, child = torch.unique(children, dim=0, return_inverse=True)
            self.edges.append((parent, action, child))
            self.levels.append(level)
        n_states = sum(len(s) for s in self.levels)
        assert len(torch.unique(torch.cat(self.levels), dim=0)) == n_states, (
            f"{type(env).__name__} is not graded: a state is reached by paths of different "
            "lengths, so it cannot be processed level by level."
        )
        self.terminal_states = env.all_terminal_states()

    def log_rewards(self) -> Tensor:
        """(N,) log R of ``terminal_states`` (float64)."""
        x = self.terminal_states
        return check_log_reward(self.env.log_reward(x), x, "log_reward").double()

    def target(self) -> Tensor:
        """(N,) the target distribution R(x) / Z over ``terminal_states`` (float64)."""
        return torch.softmax(self.log_rewards(), 0)


@torch.no_grad()
def terminal_distribution(dag: StateDAG, policy: Policy, cond: Tensor | None = None) -> Tensor:
    """(N,) P_T(x) of the policy's forward process over ``dag.terminal_states`` (float64).

    Args:
        dag: the ``StateDAG`` of the environment.
        policy: the policy (only P_F is read).
        cond: (C,) one conditioning input for every state, or None.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> from flowforge.gfn.policy import TabularPolicy
        >>> env = HyperGrid(ndim=1, height=3)
        >>> dag = StateDAG(env)
        >>> uniform = TabularPolicy(env, torch.cat(dag.levels))
        >>> terminal_distribution(dag, uniform).round(decimals=6).tolist()  # stop w.p. 1/2
        [0.5, 0.25, 0.25]
    """
    env = dag.env
    p = torch.ones(1, dtype=torch.float64)
    found, probs = [], []
    for k, level in enumerate(dag.levels):
        c = None if cond is None else cond.expand(len(level), -1)
        pf = log_probs(env, policy, level, c)[0].double().exp()  # (N_k, A)
        can_exit = env.forward_mask(level)[:, env.exit_action]
        found.append(level[can_exit])
        probs.append(p[can_exit] * pf[can_exit, env.exit_action])
        if k < len(dag.edges):
            parent, action, child = dag.edges[k]
            p_next = torch.zeros(len(dag.levels[k + 1]), dtype=torch.float64)
            p = p_next.index_add_(0, child, p[parent] * pf[parent, action])
    return torch.cat(probs)[match_rows(torch.cat(found), dag.terminal_states)]


@dataclass
class ExactFlows:
    """The exact flows of an environment under the uniform backward policy.

    Attributes:
        states: (N, *state_shape) every state, level by level.
        log_flow: (N,) log F(s) (float64).
        log_pf: (N, n_actions) the exact forward policy log P_F, -inf at invalid actions.
        log_z: log Z = log F(s_0).
    """

    states: Tensor
    log_flow: Tensor
    log_pf: Tensor
    log_z: float


def exact_flows(dag: StateDAG) -> ExactFlows:
    """The flows F(s) and forward policy that balance with the uniform P_B (backward DP).

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> env = HyperGrid(ndim=2, height=4)
        >>> round(exact_flows(StateDAG(env)).log_z, 10) == round(env.log_partition(), 10)
        True
    """
    env = dag.env
    K = len(dag.levels)
    log_flow: list[Tensor] = [torch.empty(0)] * K
    log_pf: list[Tensor] = [torch.empty(0)] * K
    for k in reversed(range(K)):
        level = dag.levels[k]
        mask = env.forward_mask(level)
        lpf = torch.full(mask.shape, -torch.inf, dtype=torch.float64)
        log_r = torch.full((len(level),), -torch.inf, dtype=torch.float64)
        can_exit = mask[:, env.exit_action]
        x = level[can_exit]
        log_r[can_exit] = check_log_reward(env.log_reward(x), x, "log_reward").double()
        F = log_r
        if k < len(dag.edges):
            parent, action, child = dag.edges[k]
            n_parents = env.backward_mask(dag.levels[k + 1]).sum(-1).double()  # (N_{k+1},)
            c = log_flow[k + 1][child] - n_parents[child].log()  # log F(s') + log P_B(s | s')
            F = torch.logaddexp(log_r, _scatter_logsumexp(c, parent, len(level)))
            lpf[parent, action] = c - F[parent]
        lpf[:, env.exit_action] = torch.where(can_exit, log_r - F, lpf[:, env.exit_action])
        log_flow[k], log_pf[k] = F, lpf
    return ExactFlows(
        torch.cat(dag.levels), torch.cat(log_flow), torch.cat(log_pf), log_flow[0][0].item()
    )

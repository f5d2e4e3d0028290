"""Shared terms of the balance losses: node log-flows with their boundary conditions.

A trajectory s_0 -> ... -> s_n -> exit is a chain of L = n_steps nodes u_0 .. u_L; the last node
of a terminated trajectory is the exit node, whose flow is the reward. Every balance loss
compares node flows with the per-transition terms

    delta_t = log P_F(a_t | s_t) - log P_B(s_t | s_{t+1})  (+ E(s_t -> s_{t+1}) forward-looking)

    plain:            log F(u_t) = policy flow,   log F(exit) = log R(x),   log F(x) = log R(x)
    forward-looking:  log F~(u_t) = policy flow,  log F~(exit) = 0,  log F~(x) = -E(x -> exit)

where x is a complete object (exit its only action): F(x) = R(x) holds exactly there, and with
F(s) = F~(s) exp(-E(s)) it reads F~(x) = R(x) exp(E(x)) = exp(-E(x -> exit)), which is 1 when the
energy of x is -log R(x). Enforcing these is what removes the shift invariance of the flows.

References:
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.
    Better Training of GFlowNets with Local Credit and Incomplete Trajectories (Pan et al., 2023),
    arXiv:2302.01687.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from flowforge.gfn.env import Env, check_log_reward
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories, evaluate_trajectories

__all__ = ["BalanceTerms", "balance_terms", "subtrajectory_residuals"]


class BalanceTerms(NamedTuple):
    """Node log-flows and transition terms of a batch (see the module docstring).

    Attributes:
        log_flow: (T + 1, B) node log-flows with the boundary conditions applied.
        delta: (T, B) log P_F - log P_B (+ E), 0 after the end.
        valid: (T, B) bool, the transitions taken.
        nodes: (T + 1, B) bool, the nodes u_0 .. u_L of each trajectory.
    """

    log_flow: Tensor
    delta: Tensor
    valid: Tensor
    nodes: Tensor


def balance_terms(
    env: Env, policy: Policy, traj: Trajectories, forward_looking: bool = False
) -> BalanceTerms:
    """The node flows and transition terms of ``traj`` under ``policy``.

    Args:
        env: the environment the trajectories come from.
        policy: the policy (its flow head is log F, or log F~ when forward-looking).
        traj: B trajectories, complete or prefixes.
        forward_looking: add the transition energies and use the F~ boundary conditions.

    Returns:
        ``BalanceTerms``.
    """
    if forward_looking and traj.energies is None:
        raise ValueError(
            f"forward-looking losses need transition energies, but {type(env).__name__} has no "
            "state_energy (the trajectories carry energies=None); use DB/SubTB/TB instead or "
            "give the environment a partial energy."
        )
    ev = evaluate_trajectories(env, policy, traj)
    T, B = traj.actions.shape
    t = torch.arange(T + 1, device=traj.n_steps.device)[:, None]
    nodes = t <= traj.n_steps[None]  # (T + 1, B)
    exit_node = (t == traj.n_steps[None]) & traj.terminated[None]
    flat = traj.states.reshape((T + 1) * B, *traj.states.shape[2:])
    complete = (env.is_terminal(flat).reshape(T + 1, B) & nodes & ~exit_node).flatten()
    log_flow = ev.log_flow
    delta = ev.log_pf - ev.log_pb
    boundary = torch.zeros((T + 1) * B, dtype=log_flow.dtype, device=log_flow.device)
    if complete.any():
        x = flat[complete]
        log_r = check_log_reward(env.log_reward(x), x, "log_reward").to(boundary)
        if forward_looking:
            log_r = log_r + env.state_energy(x).to(boundary)  # -E(x -> exit)
        boundary[complete] = log_r
    boundary = boundary.reshape(T + 1, B)
    if forward_looking:
        delta = delta + traj.energies.to(delta)
        at_exit = torch.zeros_like(log_flow)
    else:
        at_exit = traj.log_rewards.to(log_flow)[None].expand(T + 1, B)
    log_flow = torch.where(complete.reshape(T + 1, B), boundary, log_flow)
    log_flow = torch.where(exit_node, at_exit, log_flow)
    return BalanceTerms(log_flow, delta.masked_fill(~traj.valid, 0.0), traj.valid, nodes)


def subtrajectory_residuals(terms: BalanceTerms) -> tuple[Tensor, Tensor]:
    """Residuals of every sub-trajectory u_i -> u_j, i < j, vectorised over (i, j, B).

    r_ij = log F(u_i) + sum_{i <= t < j} delta_t - log F(u_j) = A_i - A_j with
    A_t = log F(u_t) - sum_{t' < t} delta_t'.

    Returns:
        ``(r (T + 1, T + 1, B), pairs (T + 1, T + 1, B) bool)``: the residuals and which (i, j)
        are sub-trajectories of each trajectory.
    """
    C = torch.cat([torch.zeros_like(terms.delta[:1]), terms.delta.cumsum(0)])  # (T + 1, B)
    A = terms.log_flow - C
    r = A[:, None] - A[None, :]  # (i, j, B)
    n = A.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool, device=A.device).triu(1)[..., None]
    pairs = upper & terms.nodes[:, None] & terms.nodes[None, :]
    return r, pairs

"""Batched trajectories: sampling from a policy, re-evaluating them, truncating them to prefixes.

A batch of B trajectories padded to T actions:

    states  (T + 1, B, *S)  s_0 .. s_T; after its last action a trajectory repeats its final state
    actions (T, B)          a_t, -1 after the end; the exit action ends a complete trajectory
    n_steps (B,)            actions taken (the exit included); terminated: ended by the exit

Prefixes (``truncate``) are trajectories that stop before the exit: the forward-looking losses
learn from them, TB cannot.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from flowforge.gfn.env import Env, check_log_reward
from flowforge.gfn.policy import Policy, log_probs
from flowforge.utils.tensor import wider_float

__all__ = [
    "TrajectoryEval",
    "Trajectories",
    "backward_trajectories",
    "evaluate_trajectories",
    "sample_trajectories",
]


@dataclass
class Trajectories:
    """A batch of B trajectories padded to T actions (see the module docstring).

    Attributes:
        states: (T + 1, B, *state_shape) long; the final state repeats after the last action.
        actions: (T, B) long; -1 after the last action.
        n_steps: (B,) long, the actions taken (the exit included).
        terminated: (B,) bool, ended by the exit action (False: an incomplete prefix).
        log_pf: (T, B) log P_F(a_t | s_t) of the policy when sampled (detached, without the
            exploration); 0 after the end. Losses re-evaluate the policy instead.
        log_pb: (T, B) log P_B(s_t | s_{t+1}) of the moves; 0 at the exit and after the end.
        log_rewards: (B,) log R(x) of the terminated trajectories; 0 for prefixes.
        energies: (T, B) transition energies E(s_t -> s_{t+1}) = E(s_{t+1}) - E(s_t), at the
            exit -log R(x) - E(x); 0 after the end. None when the environment has no energy.
        cond: (B, C) the conditioning input, or None.
        exit_action: the environment's exit action index.
    """

    states: Tensor
    actions: Tensor
    n_steps: Tensor
    terminated: Tensor
    log_pf: Tensor
    log_pb: Tensor
    log_rewards: Tensor
    energies: Tensor | None
    cond: Tensor | None
    exit_action: int

    def __len__(self) -> int:
        return self.actions.shape[1]

    @property
    def T(self) -> int:
        """The padded number of actions."""
        return self.actions.shape[0]

    @property
    def valid(self) -> Tensor:
        """(T, B) bool: the actions taken."""
        t = torch.arange(self.T, device=self.actions.device)[:, None]
        return t < self.n_steps[None]

    @property
    def exits(self) -> Tensor:
        """(T, B) bool: the exit actions."""
        return self.actions == self.exit_action

    @property
    def moves(self) -> Tensor:
        """(T, B) bool: the moves (actions taken that are not the exit)."""
        return self.valid & ~self.exits

    @property
    def last_states(self) -> Tensor:
        """(B, *state_shape) the final states (the objects x of terminated trajectories)."""
        return self.states[-1]

    def index(self, idx: Tensor) -> Trajectories:
        """The trajectories ``idx`` (a (B',) long or (B,) bool index) of the batch."""
        return replace(
            self,
            states=self.states[:, idx],
            actions=self.actions[:, idx],
            n_steps=self.n_steps[idx],
            terminated=self.terminated[idx],
            log_pf=self.log_pf[:, idx],
            log_pb=self.log_pb[:, idx],
            log_rewards=self.log_rewards[idx],
            energies=None if self.energies is None else self.energies[:, idx],
            cond=None if self.cond is None else self.cond[idx],
        )

    def truncate(self, n_keep: Tensor) -> Trajectories:
        """Keep the first ``n_keep`` (B,) actions of each trajectory (prefixes).

        A trajectory cut before its exit is no longer terminated and loses its reward.

        Example:
            >>> from flowforge.gfn.envs import HyperGrid
            >>> from flowforge.gfn.policy import MLPPolicy, PolicyConfig
            >>> env = HyperGrid(ndim=2, height=4)
            >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
            >>> g = torch.Generator().manual_seed(0)
            >>> traj = sample_trajectories(env, policy, 3, generator=g)
            >>> prefix = traj.truncate(torch.zeros(3, dtype=torch.long))
            >>> prefix.terminated.tolist(), prefix.last_states.tolist()
            ([False, False, False], [[0, 0], [0, 0], [0, 0]])
        """
        keep = torch.minimum(n_keep.to(self.n_steps), self.n_steps)  # (B,)
        t = torch.arange(self.T, device=keep.device)[:, None]
        valid = t < keep[None]  # (T, B)
        terminated = self.terminated & (keep == self.n_steps)
        node = torch.minimum(torch.arange(self.T + 1, device=keep.device)[:, None], keep[None])
        batch = torch.arange(len(self), device=keep.device)[None]
        return replace(
            self,
            states=self.states[node, batch],  # (T + 1, B, *S): the state at the cut repeats
            actions=self.actions.masked_fill(~valid, -1),
            n_steps=keep,
            terminated=terminated,
            log_pf=self.log_pf.masked_fill(~valid, 0.0),
            log_pb=self.log_pb.masked_fill(~valid, 0.0),
            log_rewards=self.log_rewards.masked_fill(~terminated, 0.0),
            energies=None if self.energies is None else self.energies.masked_fill(~valid, 0.0),
        )

    @staticmethod
    def cat(batches: list[Trajectories]) -> Trajectories:
        """Concatenate batches along B, padding them to the longest T."""
        if not batches:
            raise ValueError("cat needs at least one batch of trajectories.")
        T = max(b.T for b in batches)
        if (
            len({b.energies is None for b in batches}) > 1
            or len({b.cond is None for b in batches}) > 1
        ):
            raise ValueError("cat needs batches that all have (or all lack) energies and cond.")
        padded = [_pad(b, T) for b in batches]

        def join(name: str, dim: int) -> Tensor | None:
            parts = [getattr(b, name) for b in padded]
            return None if parts[0] is None else torch.cat(parts, dim)

        return Trajectories(
            states=join("states", 1),
            actions=join("actions", 1),
            n_steps=join("n_steps", 0),
            terminated=join("terminated", 0),
            log_pf=join("log_pf", 1),
            log_pb=join("log_pb", 1),
            log_rewards=join("log_rewards", 0),
            energies=join("energies", 1),
            cond=join("cond", 0),
            exit_action=batches[0].exit_action,
        )


def _pad(traj: Trajectories, T: int) -> Trajectories:
    """Pad ``traj`` to T actions (the final state repeats, actions -1, zeros)."""
    extra = T - traj.T
    if extra == 0:
        return traj
    B = len(traj)

    def zeros(x: Tensor) -> Tensor:
        return torch.cat([x, x.new_zeros(extra, B)])

    last = traj.states[-1:].expand(extra, *traj.states.shape[1:])
    return replace(
        traj,
        states=torch.cat([traj.states, last]),
        actions=torch.cat([traj.actions, traj.actions.new_full((extra, B), -1)]),
        log_pf=zeros(traj.log_pf),
        log_pb=zeros(traj.log_pb),
        energies=None if traj.energies is None else zeros(traj.energies),
    )


@torch.no_grad()
def sample_trajectories(
    env: Env,
    policy: Policy,
    n: int,
    cond: Tensor | None = None,
    epsilon: float = 0.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Roll out n trajectories from s_0 to the exit, batched over the trajectories.

    Each step draws a_t from the exploration policy

        pi(a | s) = (1 - epsilon) softmax(logits / temperature)(a) + epsilon / |valid(s)|

    over the valid actions, while the stored log P_F is the policy's own (temperature 1, no
    exploration), so off-policy batches are trained on correctly.

    Args:
        env: the environment.
        policy: the policy.
        n: number of trajectories B.
        cond: (B, C) conditioning input, or None.
        epsilon: probability of a uniformly random valid action, in [0, 1].
        temperature: the softmax temperature of the sampling logits (> 0).
        generator: random generator for the actions.

    Returns:
        ``Trajectories`` with T <= env.max_steps + 1 actions, all terminated.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> from flowforge.gfn.policy import MLPPolicy, PolicyConfig
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> bool(traj.terminated.all()), traj.states.shape[1:]
        (True, torch.Size([8, 2]))
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon={epsilon!r} must be in [0, 1].")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0.")
    if n < 1:
        raise ValueError(f"n={n!r} must be >= 1.")
    param = next(policy.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    A, exit_action = env.n_actions, env.exit_action
    s = env.initial_states(n, device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    n_steps = torch.zeros(n, dtype=torch.long, device=device)
    states, actions, log_pf, log_pb = [s], [], [], []
    lpf, _, _ = log_probs(env, policy, s, cond)  # (B, A)
    for _ in range(env.max_steps + 1):
        probs = (lpf.to(wider_float(lpf.dtype)) / temperature).softmax(-1)  # never in half
        if epsilon > 0:
            valid = torch.isfinite(lpf)
            probs = (1 - epsilon) * probs + epsilon * valid / valid.sum(-1, keepdim=True)
        a = torch.multinomial(probs, 1, generator=generator).squeeze(1).masked_fill(done, -1)
        move = ~done & (a != exit_action)
        log_pf.append(lpf.gather(1, a.clamp(min=0)[:, None]).squeeze(1).masked_fill(done, 0.0))
        n_steps += (~done).long()
        done = done | (a == exit_action)
        actions.append(a)
        if not move.any():  # everyone has exited
            log_pb.append(torch.zeros_like(log_pf[-1]))
            states.append(s)
            break
        s_next = s.clone()
        s_next[move] = env.step(s[move], a[move])
        lpf, lpb, _ = log_probs(env, policy, s_next, cond)
        pb = lpb.gather(1, a.clamp(0, A - 2)[:, None]).squeeze(1)  # P_B read at s_{t+1}
        log_pb.append(pb.masked_fill(~move, 0.0))
        states.append(s_next)
        s = s_next
    assert done.all(), (
        f"{type(env).__name__}: trajectories still running after max_steps + 1 = "
        f"{env.max_steps + 1} actions; max_steps must bound the number of moves."
    )
    states_ = torch.stack(states)  # (T + 1, B, *S)
    name = f"{type(env).__name__}.log_reward"
    log_rewards = check_log_reward(env.log_reward(s), s, name)  # s: the objects x
    actions_ = torch.stack(actions)
    energies = _transition_energies(env, states_, actions_, log_rewards)
    return Trajectories(
        states=states_,
        actions=actions_,
        n_steps=n_steps,
        terminated=done,
        log_pf=torch.stack(log_pf),
        log_pb=torch.stack(log_pb),
        log_rewards=log_rewards,
        energies=energies,
        cond=cond,
        exit_action=exit_action,
    )


@torch.no_grad()
def backward_trajectories(
    env: Env,
    policy: Policy,
    x: Tensor,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Complete trajectories that end at the given objects, drawn backward from P_B.

    From each x the moves are undone one at a time with a ~ P_B(. | s) (the policy's backward
    head, or uniform) until s_0, batched over the objects; the result is in forward order and
    ends with the exit, like ``sample_trajectories``, so known objects (training molecules,
    high-reward finds) train any balance loss off-policy. In a tree (each state has one
    parent) the trajectory of x is unique.

    Args:
        env: the environment.
        policy: the policy whose P_B draws the moves and whose log-probabilities are stored.
        x: (B, *state_shape) objects where the exit is valid.
        cond: (B, C) conditioning input, or None.
        generator: random generator for the backward moves.

    Raises:
        ValueError: when the exit is not valid at some x.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> from flowforge.gfn.policy import MLPPolicy, PolicyConfig
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
        >>> traj = backward_trajectories(env, policy, torch.tensor([[2, 1], [0, 0]]))
        >>> traj.n_steps.tolist(), traj.last_states.tolist(), traj.states[0].tolist()
        ([4, 1], [[2, 1], [0, 0]], [[0, 0], [0, 0]])
    """
    if x.dim() != 1 + len(env.state_shape) or tuple(x.shape[1:]) != tuple(env.state_shape):
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected (B, {', '.join(map(str, env.state_shape))})."
        )
    exit_ok = env.forward_mask(x)[:, env.exit_action]
    if not exit_ok.all():
        i = int((~exit_ok).nonzero()[0])
        raise ValueError(
            f"x[{i}] = {x[i].tolist()} is not an object: the exit is not valid there, so no "
            "complete trajectory ends at it."
        )
    param = next(policy.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    s = x.to(device)
    B = len(s)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    backward_states, backward_actions = [s], []
    for _ in range(env.max_steps + 1):
        done = done | ~env.backward_mask(s).any(-1)  # at s_0
        if done.all():
            break
        _, lpb, _ = log_probs(env, policy, s, cond)
        probs = lpb.to(wider_float(lpb.dtype)).exp()
        probs[done] = 1.0  # a placeholder draw, discarded
        a = torch.multinomial(probs, 1, generator=generator).squeeze(1).masked_fill(done, -1)
        parent = s.clone()
        parent[~done] = env.backward_step(s[~done], a[~done])
        backward_states.append(parent)
        backward_actions.append(a)
        s = parent
    assert done.all(), f"{type(env).__name__}: s_0 not reached after max_steps backward moves"
    moves = (torch.stack(backward_actions) >= 0).sum(0) if backward_actions else done.long() * 0
    T = int(moves.max()) + 1  # the moves and the exit
    t = torch.arange(T + 1, device=device)[:, None]  # forward time
    batch = torch.arange(B, device=device)[None]
    k = (moves[None] - t).clamp(min=0)  # backward index of forward state t
    states = torch.stack(backward_states)[k, batch]  # (T + 1, B, *S)
    if backward_actions:
        past = torch.stack(backward_actions)
        j = (moves[None] - 1 - t[:-1]).clamp(min=0, max=len(past) - 1)
        actions = past[j, batch]
    else:
        actions = torch.zeros(T, B, dtype=torch.long, device=device)
    actions = torch.where(t[:-1] < moves[None], actions, -1)
    actions = torch.where(t[:-1] == moves[None], env.exit_action, actions)
    traj = Trajectories(
        states=states,
        actions=actions,
        n_steps=moves + 1,
        terminated=torch.ones(B, dtype=torch.bool, device=device),
        log_pf=torch.zeros(T, B, device=device),
        log_pb=torch.zeros(T, B, device=device),
        log_rewards=check_log_reward(
            env.log_reward(x.to(device)), x, f"{type(env).__name__}.log_reward"
        ),  # fmt: skip
        energies=None,
        cond=cond,
        exit_action=env.exit_action,
    )
    ev = evaluate_trajectories(env, policy, traj)
    return replace(
        traj,
        log_pf=ev.log_pf,
        log_pb=ev.log_pb,
        energies=_transition_energies(env, states, actions, traj.log_rewards),
    )


def _transition_energies(
    env: Env, states: Tensor, actions: Tensor, log_rewards: Tensor
) -> Tensor | None:
    """(T, B) E(s_t -> s_t+1) from the partial energies of all states in one call, or None.

    Moves carry E(s_t+1) - E(s_t), the exit -log R(x) - E(x), padding 0.
    """
    T, B = actions.shape
    E = env.state_energy(states.reshape((T + 1) * B, *states.shape[2:]))
    if E is None:
        return None
    E = E.reshape(T + 1, B)
    is_exit = actions == env.exit_action
    moved = (actions >= 0) & ~is_exit
    e = torch.where(moved, E[1:] - E[:-1], torch.zeros_like(E[1:]))
    return torch.where(is_exit, -log_rewards.to(E)[None] - E[:-1], e)


class TrajectoryEval(NamedTuple):
    """The policy re-evaluated along a batch of trajectories (with gradients).

    Attributes:
        log_pf: (T, B) log P_F(a_t | s_t), 0 after the end.
        log_pb: (T, B) log P_B(s_t | s_{t+1}) of the moves, 0 at the exit and after the end.
        log_flow: (T + 1, B) the flow head at s_t (raw, no boundary condition).
    """

    log_pf: Tensor
    log_pb: Tensor
    log_flow: Tensor


def evaluate_trajectories(env: Env, policy: Policy, traj: Trajectories) -> TrajectoryEval:
    """Re-evaluate the policy on every state of ``traj`` in one batched call.

    Args:
        env: the environment the trajectories come from.
        policy: the policy to evaluate.
        traj: a batch of B trajectories with T actions.

    Returns:
        ``TrajectoryEval`` with the masked log-probabilities of the actions taken.
    """
    T, B = traj.actions.shape
    flat = traj.states.reshape((T + 1) * B, *traj.states.shape[2:])
    cond = None if traj.cond is None else traj.cond.repeat(T + 1, 1)  # row t * B + b: cond[b]
    lpf, lpb, log_flow = log_probs(env, policy, flat, cond)
    A = lpf.shape[-1]
    lpf, lpb = lpf.reshape(T + 1, B, A), lpb.reshape(T + 1, B, A - 1)
    a = traj.actions.clamp(min=0)[..., None]  # (T, B, 1)
    log_pf = lpf[:-1].gather(-1, a).squeeze(-1).masked_fill(~traj.valid, 0.0)
    log_pb = lpb[1:].gather(-1, a.clamp(max=A - 2)).squeeze(-1).masked_fill(~traj.moves, 0.0)
    return TrajectoryEval(log_pf, log_pb, log_flow.reshape(T + 1, B))

"""The environment contract: a DAG of integer states, batched moves and an exit action.

A GFlowNet builds an object x by moves s_0 -> s_1 -> ... -> s_n = x and then takes the exit
action, which ends the trajectory and scores x with R(x) > 0:

    states       (B, *state_shape) integer tensors; ``initial_states(B)`` is s_0 repeated
    actions      0 .. n_actions - 2 are moves, ``exit_action = n_actions - 1`` ends at x
    forward_mask (B, n_actions) bool: the actions valid at s (at least one per state)
    backward_mask(B, n_actions - 1) bool: the moves a that could have led to s; the backward
                 action a undoes the forward move a, ``backward_step(step(s, a), a) == s``
    log_reward   (B,) log R(x) at states where the exit action is valid
    state_energy (B,) partial energy E(s) with R(x) = exp(-E(x)), or None (forward-looking
                 losses need it; the exit carries E(x -> exit) = -log R(x) - E(x))

``is_terminal(s)`` marks complete objects, the states whose only valid action is the exit: there
the state flow equals the reward, F(x) = R(x). Every path to a state has the same number of moves
(a graded DAG), so enumerable environments are processed level by level by ``gfn.exact``.

References:
    Flow Network based Generative Models for Non-Iterative Diverse Candidate Generation
    (Bengio et al., 2021), arXiv:2106.04399.
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Env", "SequenceEnv", "check_log_reward", "log_reward_from_fn"]


class Env(abc.ABC):
    """A GFlowNet environment: batched moves on integer states with forward and backward masks.

    Concrete environments set the attributes in ``__init__`` and implement the abstract methods;
    everything is vectorised over the batch.

    Attributes:
        state_shape: shape of one state.
        n_actions: number of actions, the exit action (last) included.
        max_steps: the most moves before the exit; trajectories have at most max_steps + 1
            actions.
        encoding_dim: number of features of ``encode(s)``, the policy's input.
    """

    state_shape: tuple[int, ...]
    n_actions: int
    max_steps: int
    encoding_dim: int

    @property
    def exit_action(self) -> int:
        """The index of the exit (termination) action, ``n_actions - 1``."""
        return self.n_actions - 1

    @abc.abstractmethod
    def initial_states(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """(n, *state_shape) copies of s_0 (torch.long)."""

    @abc.abstractmethod
    def forward_mask(self, states: Tensor) -> Tensor:
        """(B, n_actions) bool: the actions valid at each state (the exit included)."""

    @abc.abstractmethod
    def backward_mask(self, states: Tensor) -> Tensor:
        """(B, n_actions - 1) bool: the moves that could have led to each state."""

    @abc.abstractmethod
    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        """(B, *state_shape) children after the moves ``actions`` (B,) (exit not allowed)."""

    @abc.abstractmethod
    def backward_step(self, states: Tensor, actions: Tensor) -> Tensor:
        """(B, *state_shape) parents: undo the moves ``actions`` (B,) valid backward."""

    @abc.abstractmethod
    def log_reward(self, x: Tensor) -> Tensor:
        """(B,) log R(x) of states ``x`` where the exit action is valid."""

    @abc.abstractmethod
    def encode(self, states: Tensor) -> Tensor:
        """(B, encoding_dim) float features of the states, the policy's input."""

    def state_energy(self, states: Tensor) -> Tensor | None:
        """(B,) partial energy E(s) of the states, or None when the environment has none.

        E must be a function of the state (path independent) with E(x) = -log R(x) where
        possible; the forward-looking losses read its increments along trajectories.
        """
        return None

    def is_terminal(self, states: Tensor) -> Tensor:
        """(B,) bool: complete objects, where the exit is the only valid action."""
        mask = self.forward_mask(states)
        return mask[:, self.exit_action] & (mask.sum(-1) == 1)

    def all_terminal_states(self) -> Tensor:
        """(N, *state_shape) every state where the exit is valid (enumerable environments)."""
        raise NotImplementedError(
            f"{type(self).__name__} is not enumerable: it lists no terminal states, so exact "
            "distributions and log Z are not available for it."
        )

    def log_partition(self) -> float:
        """Exact log Z = log sum_x R(x), by enumeration of ``all_terminal_states``."""
        x = self.all_terminal_states()
        return torch.logsumexp(self.log_reward(x).double(), 0).item()

    def check_actions(self, states: Tensor, actions: Tensor, backward: bool = False) -> None:
        """Raise ``ValueError`` unless every action is a move valid at its state."""
        if actions.shape != (states.shape[0],):
            raise ValueError(
                f"actions has shape {tuple(actions.shape)}; expected ({states.shape[0]},), one "
                "action per state."
            )
        mask = self.backward_mask(states) if backward else self.forward_mask(states)[:, :-1]
        n_moves = mask.shape[1]
        valid = mask.gather(1, actions.clamp(0, n_moves - 1)[:, None]).squeeze(1)
        ok = (actions >= 0) & (actions < n_moves) & valid
        if not ok.all():
            i = int((~ok).nonzero()[0])
            kind = "backward" if backward else "forward"
            why = (
                "the exit action ends a trajectory and has no next state"
                if not backward and int(actions[i]) == self.exit_action
                else f"it is masked out by {kind}_mask"
            )
            raise ValueError(
                f"action {int(actions[i])} is not a valid {kind} move at state "
                f"{states[i].tolist()} (batch index {i}): {why}."
            )


class SequenceEnv(Env):
    """An environment whose states are sequences written left to right: (B, n) token ids with
    -1 past the end, move a appends token a (moves are the tokens 0 .. n_actions - 2). A tree:
    each state's one parent drops its last token, so P_B = 1.

    Subclasses set the attributes and implement ``forward_mask``, ``log_reward`` and
    ``encode``.
    """

    def lengths(self, states: Tensor) -> Tensor:
        """(B,) tokens written."""
        return (states >= 0).sum(1)

    def initial_states(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.full((n, *self.state_shape), -1, dtype=torch.long, device=device)

    def backward_mask(self, states: Tensor) -> Tensor:
        n = self.lengths(states)
        last = states.gather(1, (n - 1).clamp(min=0)[:, None]).squeeze(1)  # (B,)
        moves = torch.arange(self.n_actions - 1, device=states.device)
        return (last[:, None] == moves[None]) & (n > 0)[:, None]

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        self.check_actions(states, actions)
        return states.scatter(1, self.lengths(states)[:, None], actions[:, None])

    def backward_step(self, states: Tensor, actions: Tensor) -> Tensor:
        self.check_actions(states, actions, backward=True)
        return states.scatter(1, (self.lengths(states) - 1)[:, None], -1)


def check_log_reward(log_r: Tensor, x: Tensor, source: str) -> Tensor:
    """Return ``log_r`` after checking it is (B,) and finite (0 < R < inf) at the states ``x``.

    Raises:
        ValueError: naming the expected and actual shape, or the first states whose reward is
            zero, negative or non-finite (GFlowNets need 0 < R(x) < inf; add a floor such as
            ``R(x) + 1e-8`` to the reward).

    Example:
        >>> check_log_reward(torch.zeros(2), torch.zeros(2, 3, dtype=torch.long), "R").tolist()
        [0.0, 0.0]
    """
    B = x.shape[0]
    if log_r.shape != (B,):
        raise ValueError(
            f"{source} returned shape {tuple(log_r.shape)} for {B} states; expected ({B},), one "
            "reward per state."
        )
    bad = ~torch.isfinite(log_r)
    if bad.any():
        idx = bad.nonzero().flatten()[:3]
        shown = [x[i].tolist() for i in idx]
        raise ValueError(
            f"{source} is zero, negative or non-finite at {int(bad.sum())} of {B} states, e.g. "
            f"{shown} (log R = {log_r[idx].tolist()}); GFlowNets need 0 < R(x) < inf, so add a "
            "floor to the reward (e.g. R(x) + 1e-8)."
        )
    return log_r


def log_reward_from_fn(reward_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """(B,) log R(x) of a user reward function ``reward_fn(x) -> (B,)`` R > 0, checked.

    Example:
        >>> log_reward_from_fn(lambda x: x.sum(1).double() + 1, torch.ones(2, 3)).tolist()
        [1.3862943611198906, 1.3862943611198906]
    """
    r = reward_fn(x)
    if not isinstance(r, Tensor):
        raise TypeError(f"reward_fn returned {type(r).__name__}; return a (B,) float tensor.")
    if r.shape != (x.shape[0],):
        raise ValueError(
            f"reward_fn returned shape {tuple(r.shape)} for {x.shape[0]} states; expected "
            f"({x.shape[0]},), one reward per state."
        )
    r = r.to(torch.promote_types(r.dtype, torch.float32))
    bad = ~(torch.isfinite(r) & (r > 0))
    if bad.any():
        idx = bad.nonzero().flatten()[:3]
        raise ValueError(
            f"reward_fn is zero, negative or non-finite at {int(bad.sum())} of {x.shape[0]} "
            f"states, e.g. {[x[i].tolist() for i in idx]} (R = {r[idx].tolist()}); GFlowNets "
            "need 0 < R(x) < inf, so add a floor to the reward (e.g. R(x) + 1e-8)."
        )
    return r.log()

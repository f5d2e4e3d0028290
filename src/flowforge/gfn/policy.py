"""Policies: forward logits, optional backward logits and a state flow, from encoded states.

A policy is an ``nn.Module`` with the contract

    policy(x, cond=None) -> PolicyOutput(logits (B, A), logits_pb (B, A - 1) | None, log_flow (B,))

on encoded states ``x = env.encode(s)`` (B, D) and an optional conditioning input ``cond`` (B, C);
it also holds a learned scalar ``log_z``. Logits are raw: ``log_probs`` masks invalid actions
with -inf in both P_F and P_B, and ``logits_pb = None`` means the uniform backward policy.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from flowforge.gfn.env import Env
from flowforge.models.layers import ACTIVATIONS, Activation, make_activation
from flowforge.utils.checks import check_choice

__all__ = [
    "MLPPolicy",
    "Policy",
    "PolicyConfig",
    "PolicyOutput",
    "TabularPolicy",
    "log_probs",
    "masked_log_softmax",
]


class PolicyOutput(NamedTuple):
    """Raw policy outputs for a batch of states.

    Attributes:
        logits: (B, n_actions) forward logits.
        logits_pb: (B, n_actions - 1) backward logits, or None for the uniform P_B.
        log_flow: (B,) the state flow log F(s) (log F~(s) for the forward-looking losses).
    """

    logits: Tensor
    logits_pb: Tensor | None
    log_flow: Tensor


class Policy(nn.Module, abc.ABC):
    """The policy interface: ``forward(x, cond=None) -> PolicyOutput`` and a ``log_z`` scalar."""

    log_z: nn.Parameter

    @abc.abstractmethod
    def forward(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        """Args: x: (B, D) encoded states; cond: (B, C) or None. Returns: PolicyOutput."""


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """log softmax over the valid actions; invalid ones get -inf.

    Rows without any valid action are an error (there is nothing to normalise over).

    Example:
        >>> masked_log_softmax(torch.zeros(1, 3), torch.tensor([[True, False, True]])).exp()
        tensor([[0.5000, 0.0000, 0.5000]])
    """
    if not mask.any(-1).all():
        row = int((~mask.any(-1)).nonzero()[0])
        raise ValueError(f"action mask row {row} has no valid action; nothing to choose from.")
    return logits.masked_fill(~mask, -torch.inf).log_softmax(-1)


def log_probs(
    env: Env, policy: Policy, states: Tensor, cond: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Masked log P_F(. | s), log P_B(. | s) and log F(s) of integer states.

    Args:
        env: the environment (masks and encoding).
        policy: the policy.
        states: (B, *state_shape) integer states.
        cond: (B, C) conditioning input or None.

    Returns:
        ``(log_pf (B, A), log_pb (B, A - 1), log_flow (B,))``; log_pb rows of states without a
        parent (s_0) are 0 and never read.

    Raises:
        ValueError: when the forward mask leaves a state without any valid action.
    """
    fmask = env.forward_mask(states)  # (B, A)
    if not fmask.any(-1).all():
        i = int((~fmask.any(-1)).nonzero()[0])
        raise ValueError(
            f"{type(env).__name__}.forward_mask has no valid action at state "
            f"{states[i].tolist()} (batch index {i}); every state needs at least one action "
            "(the exit action at complete objects)."
        )
    out = policy(env.encode(states), cond)
    log_pf = masked_log_softmax(out.logits, fmask)
    bmask = env.backward_mask(states)  # (B, A - 1)
    has_parent = bmask.any(-1, keepdim=True)
    logits_pb = torch.zeros_like(log_pf[:, :-1]) if out.logits_pb is None else out.logits_pb
    log_pb = logits_pb.masked_fill(~bmask, -torch.inf).masked_fill(~has_parent, 0.0)
    log_pb = log_pb.log_softmax(-1).masked_fill(~has_parent, 0.0)
    return log_pf, log_pb, out.log_flow


@dataclass
class PolicyConfig:
    """Hyperparameters of ``MLPPolicy``.

    Args:
        state_dim: D, the features of ``env.encode`` (``env.encoding_dim``).
        n_actions: A, the actions with the exit (``env.n_actions``).
        hidden: width of each hidden layer.
        depth: number of hidden layers (card 24: 2 x 256).
        cond_dim: C, the features of the conditioning input; 0 builds an unconditional policy.
        backward: ``"uniform"`` P_B or a ``"learned"`` backward head.
        activation: ``"relu"``, ``"silu"``, ``"gelu"`` or ``"selu"``.
    """

    state_dim: int
    n_actions: int
    hidden: int = 256
    depth: int = 2
    cond_dim: int = 0
    backward: Literal["uniform", "learned"] = "uniform"
    activation: Activation = "relu"


class MLPPolicy(Policy):
    """An MLP over [encode(s), cond] with forward, backward (optional) and state-flow heads.

    h = MLP([x, cond]);  logits = W_F h,  logits_pb = W_B h (learned P_B),  log F(s) = w_F h;
    ``log_z`` is a separate learned scalar (TB trains it with its own, larger learning rate).

    Args:
        config: the ``PolicyConfig``.

    References:
        Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
        arXiv:2201.13259.

    Example:
        >>> policy = MLPPolicy(PolicyConfig(state_dim=16, n_actions=3, hidden=32))
        >>> out = policy(torch.zeros(5, 16))
        >>> out.logits.shape, out.logits_pb, out.log_flow.shape
        (torch.Size([5, 3]), None, torch.Size([5]))
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        c = config
        for name in ("state_dim", "hidden", "depth"):
            if getattr(c, name) < 1:
                raise ValueError(f"PolicyConfig.{name}={getattr(c, name)!r} must be >= 1.")
        if c.n_actions < 2:
            raise ValueError(
                f"PolicyConfig.n_actions={c.n_actions!r} must be >= 2 (a move and the exit)."
            )
        if c.cond_dim < 0:
            raise ValueError(f"PolicyConfig.cond_dim={c.cond_dim!r} must be >= 0 (0: none).")
        check_choice("PolicyConfig.backward", c.backward, ("uniform", "learned"))
        check_choice("PolicyConfig.activation", c.activation, ACTIVATIONS)
        self.config = c
        layers: list[nn.Module] = []
        n_in = c.state_dim + c.cond_dim
        for _ in range(c.depth):
            layers += [nn.Linear(n_in, c.hidden), make_activation(c.activation)]
            n_in = c.hidden
        self.trunk = nn.Sequential(*layers)
        self.n_out_pb = c.n_actions - 1 if c.backward == "learned" else 0
        self.head = nn.Linear(c.hidden, c.n_actions + self.n_out_pb + 1)
        self.log_z = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        c = self.config
        if x.dim() != 2 or x.shape[1] != c.state_dim:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (B, {c.state_dim}) encoded states "
                "(env.encode(states))."
            )
        if c.cond_dim > 0:
            if cond is None or cond.shape != (x.shape[0], c.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(
                    f"cond has shape {got}; the policy was built with cond_dim={c.cond_dim}, "
                    f"so pass cond of shape ({x.shape[0]}, {c.cond_dim})."
                )
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError(
                "cond was given but the policy is unconditional (PolicyConfig.cond_dim=0); "
                "pass cond=None or build it with cond_dim > 0."
            )
        out = self.head(self.trunk(x))  # (B, A + A_pb + 1)
        A = c.n_actions
        logits_pb = out[:, A : A + self.n_out_pb] if self.n_out_pb else None
        return PolicyOutput(out[:, :A], logits_pb, out[:, -1])


class TabularPolicy(Policy):
    """One row of learned logits and one log-flow per enumerated state (no generalisation).

    The rows are keyed by the encodings of ``states``; looking up a state that is not in the
    table is an error. ``log_pf``, ``log_pb`` and ``log_flow`` start at zero (uniform policies)
    and can be set to an exact solution, e.g. from ``gfn.exact.exact_flows``.

    Args:
        env: the environment (its encoding).
        states: (N, *state_shape) every state the policy will be asked about.
        backward: ``"uniform"`` P_B or a ``"learned"`` table.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> env = HyperGrid(ndim=1, height=3)
        >>> policy = TabularPolicy(env, torch.tensor([[0], [1], [2]]))
        >>> policy(env.encode(torch.tensor([[2], [0]]))).log_flow.shape
        torch.Size([2])
    """

    def __init__(
        self, env: Env, states: Tensor, backward: Literal["uniform", "learned"] = "uniform"
    ) -> None:
        super().__init__()
        check_choice("backward", backward, ("uniform", "learned"))
        N = states.shape[0]
        self.register_buffer("keys", env.encode(states))  # (N, D)
        self.logits = nn.Parameter(torch.zeros(N, env.n_actions))
        learned = backward == "learned"
        self.logits_pb = nn.Parameter(torch.zeros(N, env.n_actions - 1)) if learned else None
        self.log_flow = nn.Parameter(torch.zeros(N))
        self.log_z = nn.Parameter(torch.zeros(()))

    def rows(self, x: Tensor) -> Tensor:
        """(B,) the table rows of encoded states ``x`` (B, D)."""
        keys = self.keys.to(x.dtype)
        both = torch.cat([keys, x])
        _, inverse = torch.unique(both, dim=0, return_inverse=True)
        lookup = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=x.device)
        lookup[inverse[: len(keys)]] = torch.arange(len(keys), device=x.device)
        rows = lookup[inverse[len(keys) :]]
        if (rows < 0).any():
            raise ValueError("TabularPolicy was asked about a state that is not in its table.")
        return rows

    def forward(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        if cond is not None:
            raise ValueError("TabularPolicy is unconditional; pass cond=None.")
        r = self.rows(x)
        logits_pb = None if self.logits_pb is None else self.logits_pb[r]
        return PolicyOutput(self.logits[r], logits_pb, self.log_flow[r])

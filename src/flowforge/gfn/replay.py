"""A replay buffer of complete trajectories, optionally one per object and drawn by reward.

Off-policy training mixes replayed trajectories with fresh ones; the balance losses stay valid
off-policy because they re-evaluate the current policy on the stored states.

References:
    Towards Understanding and Improving GFlowNet Training (Shen et al., 2023),
    arXiv:2305.07170 (reward-prioritised replay).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from flowforge.gfn.trajectories import Trajectories
from flowforge.utils.checks import check_choice

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Keeps up to ``capacity`` terminated trajectories (FIFO: the oldest leave first).

    Args:
        capacity: the most trajectories kept.
        priority: draw ``"uniform"``ly or in proportion to the ``"reward"`` R(x).
        unique: keep one trajectory per object x (the first one seen).

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> from flowforge.gfn.policy import MLPPolicy, PolicyConfig
        >>> from flowforge.gfn.trajectories import sample_trajectories
        >>> env = HyperGrid(ndim=1, height=3)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=8))
        >>> buffer = ReplayBuffer(capacity=10)
        >>> g = torch.Generator().manual_seed(0)
        >>> buffer.add(sample_trajectories(env, policy, 50, generator=g))
        >>> len(buffer)  # only three distinct objects exist
        3
    """

    def __init__(
        self,
        capacity: int,
        priority: Literal["uniform", "reward"] = "uniform",
        unique: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be >= 1.")
        check_choice("priority", priority, ("uniform", "reward"))
        self.capacity = capacity
        self.priority = priority
        self.unique = unique
        self.storage: Trajectories | None = None

    def __len__(self) -> int:
        return 0 if self.storage is None else len(self.storage)

    def add(self, traj: Trajectories) -> None:
        """Store the terminated trajectories of ``traj`` (prefixes are skipped)."""
        traj = traj.index(traj.terminated)
        if self.unique and len(traj):
            traj = traj.index(self._new(traj.last_states))
        if not len(traj):
            return
        stored = traj if self.storage is None else Trajectories.cat([self.storage, traj])
        n = len(stored)
        self.storage = stored.index(torch.arange(max(n - self.capacity, 0), n))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Trajectories:
        """n trajectories drawn with replacement (uniformly or with probability R(x) / sum R)."""
        if self.storage is None:
            raise ValueError("the replay buffer is empty; add trajectories before sampling.")
        log_w = self.storage.log_rewards.double()
        if self.priority == "uniform":
            log_w = torch.zeros_like(log_w)
        idx = torch.multinomial(torch.softmax(log_w, 0), n, replacement=True, generator=generator)
        return self.storage.index(idx.to(self.storage.n_steps.device))

    def _new(self, x: Tensor) -> Tensor:
        """(B,) bool: the objects not yet stored and first in their batch."""
        keys = x.flatten(1)
        old = (
            keys.new_zeros((0, keys.shape[1]))
            if self.storage is None
            else self.storage.last_states.flatten(1)
        )
        _, inverse = torch.unique(torch.cat([old, keys]), dim=0, return_inverse=True)
        seen = torch.zeros(int(inverse.max()) + 1, dtype=torch.bool, device=keys.device)
        seen[inverse[: len(old)]] = True
        inv = inverse[len(old) :]
        first = torch.full_like(seen, len(keys), dtype=torch.long)
        first.scatter_reduce_(0, inv, torch.arange(len(keys), device=keys.device), "amin")
        return ~seen[inv] & (first[inv] == torch.arange(len(keys), device=keys.device))

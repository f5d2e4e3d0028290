"""Bit sequences: append n bits one at a time; the reward favours strings near a set of modes.

    R(x) = exp(-beta * min_m d_H(x, m) / n)

with d_H the Hamming distance to the modes m. The partial energy of a prefix s of length l is
the same expression on the first l bits, E(s) = beta * min_m d_H(s, m[:l]) / n, a function of
the state that equals -log R(x) at full strings. Appending is a tree: each state has one parent,
so P_B = 1 and every trajectory is determined by its string.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259 (the bit-sequence task).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.gfn.env import SequenceEnv, log_reward_from_fn

__all__ = ["BitSequence"]

_MAX_ENUMERATED = 24  # 2^24 strings is the most all_terminal_states lists


class BitSequence(SequenceEnv):
    """Build a binary string of length n left to right; exit only when it is full.

    States are (B, n) with entries -1 (not yet written), 0 or 1; action 0 or 1 appends that
    bit, action 2 exits (valid only at full strings). The encoding is the two indicators
    [s == 0, s == 1] (2n features).

    Args:
        modes: (M, n) 0/1 tensor of the target strings.
        beta: the reward's sharpness (R at distance n is exp(-beta)).
        reward_fn: a replacement reward ``reward_fn(x) -> (B,) R > 0`` on full strings; the
            partial energy is then not available (None).

    Example:
        >>> env = BitSequence(torch.tensor([[1, 1, 0, 0]]), beta=4.0)
        >>> env.log_reward(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])).tolist()
        [-0.0, -2.0]
        >>> env.state_energy(torch.tensor([[1, 0, -1, -1]])).tolist()  # one mismatch so far
        [1.0]
    """

    def __init__(
        self,
        modes: Tensor,
        beta: float = 3.0,
        reward_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if modes.dim() != 2 or modes.shape[0] < 1 or modes.shape[1] < 1:
            raise ValueError(
                f"modes has shape {tuple(modes.shape)}; pass an (M, n) tensor of M >= 1 target "
                "strings of n >= 1 bits."
            )
        if ((modes != 0) & (modes != 1)).any():
            raise ValueError("modes must hold only 0 and 1.")
        if not beta >= 0:
            raise ValueError(f"beta={beta!r} must be >= 0.")
        self.modes = modes.long()
        self.beta = beta
        self.reward_fn = reward_fn
        self.length = modes.shape[1]
        self.state_shape = (self.length,)
        self.n_actions = 3
        self.max_steps = self.length
        self.encoding_dim = 2 * self.length

    def forward_mask(self, states: Tensor) -> Tensor:
        full = self.lengths(states) == self.length  # (B,)
        return torch.stack([~full, ~full, full], dim=1)  # (B, 3)

    def _min_distance(self, states: Tensor) -> Tensor:
        """(B,) Hamming distance of the written bits to the closest mode's prefix."""
        m = self.modes.to(states.device)
        mismatch = (states[:, None, :] >= 0) & (states[:, None, :] != m[None])  # (B, M, n)
        return mismatch.sum(-1).min(1).values

    def log_reward(self, x: Tensor) -> Tensor:
        if not (self.lengths(x) == self.length).all():
            raise ValueError("log_reward takes full strings; some states still hold -1.")
        if self.reward_fn is not None:
            return log_reward_from_fn(self.reward_fn, x).to(torch.get_default_dtype())
        return -self.state_energy(x)

    def state_energy(self, states: Tensor) -> Tensor | None:
        if self.reward_fn is not None:
            return None
        d = self._min_distance(states).to(torch.get_default_dtype())
        return self.beta * d / self.length

    def encode(self, states: Tensor) -> Tensor:
        return torch.cat([states == 0, states == 1], dim=1).to(torch.get_default_dtype())

    def all_terminal_states(self) -> Tensor:
        if self.length > _MAX_ENUMERATED:
            raise ValueError(
                f"n={self.length} bits give 2^{self.length} strings; enumeration is limited to "
                f"n <= {_MAX_ENUMERATED}."
            )
        codes = torch.arange(2**self.length)[:, None]
        shifts = torch.arange(self.length - 1, -1, -1)
        return (codes >> shifts) & 1  # (2^n, n), first bit most significant

"""The hypergrid: walk from the origin of a {0..H-1}^D grid by +1 steps and stop anywhere.

    R(x) = R0 + R1 prod_d 1[0.25 < a_d] + R2 prod_d 1[0.3 < a_d <= 0.4],  a_d = |x_d / (H-1) - 0.5|

(the comparisons carry torchgfn's 1e-12 tolerance, so a_d = 0.25 and a_d = 0.3 are excluded and
a_d = 0.4 is included). The 2^D modes with every a_d in (0.3, 0.4] hold R0 + R1 + R2, the corner
regions R0 + R1 and the rest R0 (the floor that keeps every reward positive).

References:
    Flow Network based Generative Models for Non-Iterative Diverse Candidate Generation
    (Bengio et al., 2021), arXiv:2106.04399.
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.gfn.env import Env, log_reward_from_fn

__all__ = ["HyperGrid"]

_EPS = 1e-12  # torchgfn's tolerance on the reward's comparisons


class HyperGrid(Env):
    """The D-dimensional hypergrid of side H: move +1 along one coordinate or exit.

    States are coordinates (B, D) in [0, H - 1]; action d < D adds 1 to coordinate d, action D
    exits (valid everywhere, so every state is a terminal object); the policy sees a one-hot
    encoding of each coordinate (D * H features). The partial energy is the surrogate
    E(s) = -log R(s) (every state is an object), so the exit carries no energy.

    Args:
        ndim: D, the number of coordinates.
        height: H, the side of the grid (>= 2).
        R0: the reward floor (> 0).
        R1: the reward added in the outer corner regions.
        R2: the reward added in the modes.
        reward_fn: a replacement reward ``reward_fn(x) -> (B,) R > 0`` on coordinates (B, D);
            None uses the standard reward above.

    References:
        Flow Network based Generative Models for Non-Iterative Diverse Candidate Generation
        (Bengio et al., 2021), arXiv:2106.04399.

    Example:
        >>> env = HyperGrid(ndim=2, height=8)
        >>> r = env.log_reward(torch.tensor([[1, 6], [0, 0], [3, 4]])).exp()
        >>> [round(v, 4) for v in r.tolist()]  # a mode, a corner, the floor
        [2.501, 0.501, 0.001]
        >>> round(env.log_partition(), 4)  # 4 modes, 12 corner states, 48 floor states
        2.7766
    """

    def __init__(
        self,
        ndim: int = 2,
        height: int = 8,
        R0: float = 1e-3,
        R1: float = 0.5,
        R2: float = 2.0,
        reward_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if ndim < 1:
            raise ValueError(f"ndim={ndim!r} must be >= 1.")
        if height < 2:
            raise ValueError(f"height={height!r} must be >= 2 (one cell has no moves).")
        if reward_fn is None and not R0 > 0:
            raise ValueError(
                f"R0={R0!r} must be > 0: it is the reward floor, and GFlowNets need R(x) > 0."
            )
        if reward_fn is None and (R1 < 0 or R2 < 0):
            raise ValueError(f"R1={R1!r} and R2={R2!r} must be >= 0.")
        self.ndim, self.height = ndim, height
        self.R0, self.R1, self.R2 = R0, R1, R2
        self.reward_fn = reward_fn
        a = (torch.arange(height, dtype=torch.float64) / (height - 1) - 0.5).abs()  # (H,)
        self._outer = a > 0.25 + _EPS  # per coordinate value: is a_d in the outer region
        self._band = (a > 0.3 + _EPS) & (a < 0.4 + _EPS)
        self.state_shape = (ndim,)
        self.n_actions = ndim + 1
        self.max_steps = ndim * (height - 1)
        self.encoding_dim = ndim * height

    def initial_states(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(n, self.ndim, dtype=torch.long, device=device)

    def forward_mask(self, states: Tensor) -> Tensor:
        exit_ok = torch.ones(states.shape[0], 1, dtype=torch.bool, device=states.device)
        return torch.cat([states < self.height - 1, exit_ok], dim=1)  # (B, D + 1)

    def backward_mask(self, states: Tensor) -> Tensor:
        return states > 0  # (B, D)

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        self.check_actions(states, actions)
        return states + torch.nn.functional.one_hot(actions, self.ndim)

    def backward_step(self, states: Tensor, actions: Tensor) -> Tensor:
        self.check_actions(states, actions, backward=True)
        return states - torch.nn.functional.one_hot(actions, self.ndim)

    def log_reward(self, x: Tensor) -> Tensor:
        dtype = torch.get_default_dtype()
        if self.reward_fn is not None:
            return log_reward_from_fn(self.reward_fn, x).to(dtype)
        outer = self._outer.to(x.device)[x].all(1)  # (B,)
        band = self._band.to(x.device)[x].all(1)
        r = self.R0 + self.R1 * outer.double() + self.R2 * band.double()
        return r.log().to(dtype)

    def state_energy(self, states: Tensor) -> Tensor:
        return -self.log_reward(states)

    def encode(self, states: Tensor) -> Tensor:
        one_hot = torch.nn.functional.one_hot(states, self.height)  # (B, D, H)
        return one_hot.flatten(1).to(torch.get_default_dtype())

    def all_terminal_states(self) -> Tensor:
        axes = [torch.arange(self.height)] * self.ndim
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.ndim)

"""Couplings: how a minibatch of noise is paired with a minibatch of data before interpolation.

Every coupling returns ``(x_0, x_1, cond)`` with ``cond`` kept aligned with ``x_1``, so labels,
masks and other conditions always travel with their data point (label-preserving).
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import Tensor

from flowforge.utils import check_batch

__all__ = ["PairCoupling", "IndependentCoupling", "ExactOTCoupling", "SinkhornCoupling"]


def _sq_cost(x_0: Tensor, x_1: Tensor) -> np.ndarray:
    """Squared Euclidean cost matrix (B, B) in float64 numpy, as POT expects."""
    a = x_0.detach().flatten(1).to("cpu", torch.float64)
    b = x_1.detach().flatten(1).to("cpu", torch.float64)
    return torch.cdist(a, b).square().numpy()


class PairCoupling(abc.ABC):
    """Abstract minibatch coupling ``(x_0, x_1, cond, generator) -> (x_0, x_1, cond)``."""

    def __call__(
        self,
        x_0: Tensor,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        if x_0.shape[0] != x_1.shape[0]:
            raise ValueError(
                f"x_0 has {x_0.shape[0]} examples but x_1 has {x_1.shape[0]}; minibatch "
                "couplings pair equal-sized batches."
            )
        check_batch("cond", cond, x_1.shape[0], ref="x_1")
        i, j = self.pair(x_0, x_1, generator)
        return x_0[i], x_1[j], None if cond is None else cond[j]

    @abc.abstractmethod
    def pair(
        self, x_0: Tensor, x_1: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Index tensors ``(i, j)`` of shape (B,): the pairs are (x_0[i], x_1[j])."""


class IndependentCoupling(PairCoupling):
    """The product coupling: pairs as drawn (plain conditional flow matching).

    Example:
        >>> x_0, x_1 = torch.randn(4, 2), torch.randn(4, 2)
        >>> torch.equal(IndependentCoupling()(x_0, x_1)[0], x_0)
        True
    """

    def pair(
        self, x_0: Tensor, x_1: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        idx = torch.arange(x_1.shape[0], device=x_1.device)
        return idx, idx


class ExactOTCoupling(PairCoupling):
    """Minibatch exact optimal transport for the squared Euclidean cost.

    With uniform weights on equal batches the optimal plan is a permutation (Birkhoff), so x_1
    and cond keep their order and x_0 is permuted: pairs minimise sum_i ||x_0[pi(i)] - x_1[i]||^2.
    Solved by POT's network simplex (``ot.emd``), O(B^3) worst case on the CPU.

    References:
        Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport
        (Tong et al., 2024), arXiv:2302.00482.
        Multisample Flow Matching (Pooladian et al., 2023), arXiv:2304.14772.

    Example:
        >>> x_1 = torch.tensor([[0.0], [10.0]]); x_0 = torch.tensor([[9.0], [1.0]])
        >>> ExactOTCoupling()(x_0, x_1)[0].flatten().tolist()
        [1.0, 9.0]
    """

    def pair(
        self, x_0: Tensor, x_1: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        import ot  # POT pulls in scipy and sklearn: import on first use

        n = x_1.shape[0]
        w = np.full(n, 1.0 / n)
        plan = ot.emd(w, w, _sq_cost(x_0, x_1))
        i = torch.as_tensor(plan.argmax(axis=0), device=x_0.device)  # source for each target
        return i, torch.arange(n, device=x_1.device)


class SinkhornCoupling(PairCoupling):
    """Entropic OT: pairs drawn with replacement from the Sinkhorn plan.

    The cost is normalised by its maximum (as in torchcfm), so ``reg`` is scale free; small
    ``reg`` approaches exact OT, large ``reg`` the independent coupling.

    Args:
        reg: entropic regularisation relative to the largest cost, > 0.
        num_iter: Sinkhorn iterations.

    References:
        Sinkhorn Distances (Cuturi, 2013), arXiv:1306.0895.
        Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport
        (Tong et al., 2024), arXiv:2302.00482.

    Example:
        >>> x_0, x_1 = torch.randn(16, 2), torch.randn(16, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> SinkhornCoupling(reg=0.05)(x_0, x_1, generator=g)[0].shape
        torch.Size([16, 2])
    """

    def __init__(self, reg: float = 0.05, num_iter: int = 1000) -> None:
        if not reg > 0:
            raise ValueError(f"reg={reg!r} must be positive (0.05 is a good start).")
        self.reg, self.num_iter = float(reg), int(num_iter)

    def plan(self, x_0: Tensor, x_1: Tensor) -> Tensor:
        """The (B, B) entropic plan with marginals 1/B, as a float64 tensor."""
        import ot  # POT pulls in scipy and sklearn: import on first use

        n = x_1.shape[0]
        w = np.full(n, 1.0 / n)
        cost = _sq_cost(x_0, x_1)
        p = ot.sinkhorn(w, w, cost / max(cost.max(), 1e-12), self.reg, numItermax=self.num_iter)
        return torch.as_tensor(p)

    def pair(
        self, x_0: Tensor, x_1: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        n = x_1.shape[0]
        p = self.plan(x_0, x_1).flatten().clamp_min(0)
        flat = torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)
        return (flat // n).to(x_0.device), (flat % n).to(x_1.device)

"""Field wrappers that change what a network predicts while keeping the field contract."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.paths.affine import AffinePath, Parameterization
from flowforge.protocols import Field

__all__ = ["ConvertedField"]


class ConvertedField(nn.Module):
    """Wrap a network predicting ``source`` so that it returns ``target`` at the same (x, t).

    ``ConvertedField(eps_net, path, "epsilon", "velocity")`` is a velocity field any solver can
    integrate; ``ConvertedField(v_net, path, "velocity", "score")`` is the score an SDE sampler
    needs. The conversion is exact for the path's Gaussian source (see ``AffinePath.convert``).

    Args:
        model: a field ``model(x, t, cond) -> (B, ...)`` in the ``source`` parameterisation.
        path: the affine path the network was trained on.
        source, target: ``"velocity"``, ``"x1"``, ``"epsilon"`` or ``"score"``.

    Example:
        >>> from flowforge.paths import CondOTPath
        >>> eps_net = lambda x, t, cond=None: torch.zeros_like(x)  # predicts x_0 = 0
        >>> v = ConvertedField(eps_net, CondOTPath(), "epsilon", "velocity")
        >>> v(torch.ones(1, 2), torch.tensor([0.5])).tolist()  # x_1 = x_t / t = 2, v = x_1 - x_0
        [[2.0, 2.0]]
    """

    def __init__(
        self, model: Field, path: AffinePath, source: Parameterization, target: Parameterization
    ) -> None:
        super().__init__()
        path.convert(torch.zeros(1), torch.zeros(1), torch.full((1,), 0.5), source, target)
        self.model, self.path, self.source, self.target = model, path, source, target

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        pred = self.model(x, t, cond)
        return self.path.convert(pred, x, t, self.source, self.target)

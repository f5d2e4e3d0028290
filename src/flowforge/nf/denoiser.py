"""STARFlow's learned denoiser: a small network trained beside the flow to map its noisy samples
back to clean data, instead of the score step.

The flow models noise-augmented data x~ = x + sigma_n eps; samples are of x~. ``DenoisedFlow``
holds the flow and a residual denoiser x^ = x~ + r(x~), trained in the same forward pass by
mean squared error against the clean x (``DenoisedFlow(x~, cond, clean=x)``), so one call of a
DDP-wrapped model carries both gradients.

References:
    STARFlow: Scaling Latent Normalizing Flows (Gu et al., NeurIPS 2025), arXiv:2506.06276
    (a decoder fine-tuned to decode noisy latents; here a small denoiser in the flow's space).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.nf.base import NormalizingFlow, standard_normal_log_prob

__all__ = ["DenoisedFlow", "residual_denoiser"]


def residual_denoiser(shape: tuple[int, ...], width: int = 64) -> nn.Module:
    """r(x~): an MLP for vectors (D,), three 3x3 convolutions for (C, H, W); the last layer
    starts at zero, so x^ = x~ at initialisation.

    Example:
        >>> residual_denoiser((1, 8, 8))(torch.randn(2, 1, 8, 8)).abs().max().item()
        0.0
    """
    if len(shape) == 1:
        (D,) = shape
        net = nn.Sequential(nn.Linear(D, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                            nn.Linear(width, D))  # fmt: skip
    else:
        C = shape[0]
        net = nn.Sequential(
            nn.Conv2d(C, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, C, 3, padding=1),
        )  # fmt: skip
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class DenoisedFlow(NormalizingFlow):
    """A flow and its learned denoiser; the flow contract passes through to the flow.

    Args:
        flow: the normalizing flow of the noisy data.
        denoiser: r(x~), the residual of the denoised sample (``residual_denoiser``, or the
            causal ``CausalVideoDenoiser`` of videos).
        target: what the denoiser learns: the ``"clean"`` data (STARFlow), or the flow's own
            Tweedie step x~ + sigma^2 grad log p(x~) (``"score"``: flow-score matching,
            STARFlow-V; the flow is not trained by this term).

    Example:
        >>> from flowforge.nf import TransformerFlow, TransformerFlowConfig
        >>> flow = TransformerFlow(TransformerFlowConfig(shape=(2,), width=16, head_dim=8))
        >>> model = DenoisedFlow(flow, residual_denoiser((2,)))
        >>> z, logdet, mse = model(torch.randn(3, 2), clean=torch.zeros(3, 2))
        >>> mse.shape
        torch.Size([3])
    """

    def __init__(self, flow: NormalizingFlow, denoiser: nn.Module, target: str = "clean") -> None:
        super().__init__()
        if target not in ("clean", "score"):
            raise ValueError(f"target={target!r} must be 'clean' or 'score'.")
        self.flow = flow
        self.denoiser = denoiser
        self.target = target
        self.event_shape = flow.event_shape

    def forward(
        self,
        x: Tensor,
        cond: Tensor | None = None,
        clean: Tensor | None = None,
        noise_std: float = 0.0,
    ):
        """``(z, logdet)`` of the flow; with ``clean`` also the denoiser's per-example MSE
        against its target (the clean data, or the flow's Tweedie step at ``noise_std``)."""
        if clean is None:
            return self.flow(x, cond)
        if self.target == "clean":
            z, logdet = self.flow(x, cond)
            target = clean
        else:
            x = x.detach().requires_grad_(True)
            z, logdet = self.flow(x, cond)
            log_p = standard_normal_log_prob(z) + logdet
            (score,) = torch.autograd.grad(log_p.sum(), x, retain_graph=True)
            target = (x + noise_std**2 * score).detach()
        mse = (self.denoise(x.detach()) - target).square().flatten(1).mean(1)  # (B,)
        return z, logdet, mse

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.flow.inverse(z, cond)

    def denoise(self, x_noisy: Tensor) -> Tensor:
        """x^ = x~ + r(x~)."""
        return x_noisy + self.denoiser(x_noisy)

    def decode(self, z: Tensor, cond: Tensor | None = None, **kwargs):
        """The flow's ``decode`` (sequential or Jacobi), before denoising."""
        return self.flow.decode(z, cond, **kwargs)

"""Fine-tuning flow matching by maximum likelihood of reconstructions (straightforward, residual).

A small flow-matching loss does not make the *integrated* sample accurate when the field is stiff:
with ||v_theta - u||_inf <= delta and u L_u-Lipschitz, the N-step solver error obeys
||eps_N|| <= exp(L_u t_{N-1}) sum_j (delta tau_j + M tau_j^2 / 2) + ||eps_0||. So fine-tune the
deployment solver itself, Phi_theta = K Euler steps (or any fixed-step RK scheme) from t = 0 to 1,
to reconstruct data under the Gaussian likelihood p(x_1 | x_0) = N(Phi_theta(x_0), sigma^2 I):

    pairs       x_1 ~ data,  x_0 = Phi_ref^{-1}(x_1)   (frozen base ODE from t = 1 to t = 0,
                                                       a fine solver, computed once and cached)
    objective   L_MLE = ||Phi_theta(x_0) - x_1||^2 / (2 sigma^2)  [+ lambda_FM L_FM(x_1)]

or, cheaper and noisier, from an interpolant state x_s = (1 - s) x_0 + s x_1, x_0 ~ N(0, I)
independent, s ~ U(s_min, 1), reconstructing Phi_theta(x_s; s -> 1). Gradients flow through the
unrolled solver steps (optionally recomputed per step: gradient checkpointing).

Two variants. *Straightforward*: fine-tune every weight of the base network with L_MLE.
*Residual*: keep v_ref frozen and learn v = v_ref + r_phi with the contracting correction
(:class:`ResidualContractionField`)

    r_phi(x, t) = -gamma_phi(t) (x - h_phi(x, t)),  gamma_phi = softplus(.) >= 0,
    Lip_x(h_phi) <= rho < 1,

whose Jacobian -gamma (I - J_h) has every symmetric-part eigenvalue <= -gamma (1 - rho) < 0.

Pairs are stored packed like reflow pairs, ``pairs[i] = stack([x_0_i, x_1_i])`` of shape
(N, 2, ...), so ``TensorDataset(pairs[, cond])`` feeds ``flowforge.train.train`` and each chunk
reaches :class:`MLEReconstructionLoss` whole.

References:
    Fine-Tuning Flow Matching via Maximum Likelihood Estimation of Reconstructions (Li, Ding, Li
    & Li, 2025), arXiv:2510.02081.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint as checkpoint_step
from tqdm.auto import tqdm

from flowforge.losses.fm import FlowMatchingLoss
from flowforge.models.layers import SinusoidalEmbedding
from flowforge.protocols import Field
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import TABLEAUS, ODEMethod, sample_ode
from flowforge.utils import check_batch, check_choice, check_same_shape, expand_like, wider_float

__all__ = [
    "MLEReconstructionLoss",
    "MLEStart",
    "ResidualContractionField",
    "make_reconstruction_pairs",
    "reconstruct",
]

MLEStart = Literal["pairs", "interpolant"]
LipschitzActivation = Literal["tanh", "relu"]


def _check_n_steps(name: str, n_steps: int) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(
            f"{name}={n_steps!r} must be an integer >= 1 (solver steps); pass e.g. {name}=4."
        )


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_positive(name: str, value: float, example: str) -> None:
    if not _is_real(value) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a positive number; pass e.g. {example}.")


@torch.no_grad()
def make_reconstruction_pairs(
    base: Field,
    x_1: Tensor,
    n_steps: int = 100,
    method: ODEMethod = "rk4",
    cond: Tensor | None = None,
    batch_size: int = 4096,
    progress: bool = False,
) -> Tensor:
    """Encode data by the frozen base flow backwards, x_0 = Phi_ref^{-1}(x_1), and pack the pairs.

    Solves dx/dt = base(x, t, cond) from t = 1 to t = 0 on the decreasing
    ``uniform_grid(n_steps, 1, 0)`` with a fixed-step scheme, in batches and without gradients.
    The deterministic coupling keeps the MLE from averaging modes (independent noise-data pairs
    make it mean-seeking). Compute once and cache (the result is a plain tensor: save it with
    ``safetensors`` or keep it in memory for many fine-tuning steps).

    Args:
        base: the frozen pretrained velocity ``base(x, t, cond)`` (in eval mode).
        x_1: (N, ...) data to reconstruct; its device and dtype (widened to float32 or more) are
            those of the solve.
        n_steps: steps of the fine inverse solver (card 15: 100-200).
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        cond: optional (N, ...) conditioning (labels, observations) of each example.
        batch_size: examples per solve.
        progress: show a tqdm progress bar over batches.

    Returns:
        (N, 2, ...) packed pairs ``stack([x_0, x_1], 1)`` on x_1's device.

    References:
        Fine-Tuning Flow Matching via Maximum Likelihood Estimation of Reconstructions (Li et al.,
        2025), arXiv:2510.02081.

    Example:
        >>> decay = lambda x, t, c=None: -x
        >>> pairs = make_reconstruction_pairs(decay, torch.ones(3, 2), n_steps=4, method="euler")
        >>> torch.allclose(pairs[:, 0], torch.full((3, 2), 1.25**4))  # Euler backwards in time
        True
    """
    if not isinstance(x_1, Tensor) or x_1.dim() < 2:
        shape = tuple(x_1.shape) if isinstance(x_1, Tensor) else type(x_1).__name__
        raise ValueError(f"x_1 is {shape}; pass data of shape (N, ...) with a feature dimension.")
    _check_n_steps("n_steps", n_steps)
    check_choice("method", method, TABLEAUS)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 4096.")
    check_batch("cond", cond, x_1.shape[0], ref="x_1")
    x_1 = x_1.to(wider_float(x_1.dtype))
    grid = uniform_grid(n_steps, 1.0, 0.0, device=x_1.device, dtype=x_1.dtype)  # data -> noise
    chunks = []
    for start in tqdm(range(0, len(x_1), batch_size), desc="MLE pairs", disable=not progress):
        x_1_b = x_1[start : start + batch_size]  # (b, ...)
        cond_b = cond[start : start + batch_size] if cond is not None else None
        with parametrize.cached():
            x_0_b = sample_ode(base, x_1_b, grid, method=method, cond=cond_b)
        chunks.append(torch.stack([x_0_b, x_1_b], 1))  # (b, 2, ...)
    return torch.cat(chunks)


class _TimeChange:
    """dx/dtau = (1 - s) v(x, s + (1 - s) tau): the field on [s, 1] in a time tau in [0, 1]."""

    def __init__(self, field: Field, t_start: Tensor) -> None:
        self.field, self.t_start = field, t_start

    def __call__(self, x: Tensor, tau: Tensor, cond: Tensor | None = None) -> Tensor:
        span = 1 - self.t_start  # (B,)
        return expand_like(span, x) * self.field(x, self.t_start + span * tau, cond)


def reconstruct(
    model: Field,
    x_0: Tensor,
    n_steps: int = 4,
    method: ODEMethod = "euler",
    cond: Tensor | None = None,
    t_start: Tensor | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """The deployment solver Phi(x_0): ``n_steps`` fixed steps from t = 0 (or ``t_start``) to 1.

    Without ``t_start`` this is exactly ``sample_ode(model, x_0, uniform_grid(n_steps), method,
    cond)``, the inference sampler, so fine-tuning and deployment use the same grid. With a
    per-example ``t_start = s`` it takes ``n_steps`` steps of size (1 - s) / n_steps from s to 1
    (through the time change t = s + (1 - s) tau). Differentiable in the model's parameters and
    x_0; ``checkpoint`` recomputes each step in the backward pass (memory O(1) in ``n_steps``
    instead of O(n_steps), one extra forward), with the same result.

    Args:
        model: the velocity ``model(x, t, cond)``.
        x_0: (B, ...) the state at t = 0 (or at ``t_start``).
        n_steps: K, the deployment step count (card 15: 1-10).
        method: ``"euler"`` (default), ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        cond: optional (B, ...) conditioning.
        t_start: optional (B,) start times in [0, 1) (interpolant starts).
        checkpoint: per-step gradient checkpointing.

    Returns:
        (B, ...) the reconstruction at t = 1, in float32 or wider.

    Example:
        >>> x = reconstruct(lambda x, t, c=None: torch.ones_like(x), torch.zeros(2, 1), 4)
        >>> x.flatten().tolist()
        [1.0, 1.0]
    """
    _check_n_steps("n_steps", n_steps)
    check_choice("method", method, TABLEAUS)
    if not isinstance(x_0, Tensor) or x_0.dim() < 1:
        raise ValueError(f"x_0 is {x_0!r}; pass a (B, ...) tensor with a leading batch dimension.")
    field = model
    if t_start is not None:
        if t_start.shape != (x_0.shape[0],):
            raise ValueError(
                f"t_start has shape {tuple(t_start.shape)} but x_0 has batch size "
                f"{x_0.shape[0]}; pass one start time per example, shape ({x_0.shape[0]},)."
            )
        if t_start.numel() and not (t_start.min() >= 0 and t_start.max() < 1):
            raise ValueError(
                f"t_start has values in [{t_start.min().item():.4g}, {t_start.max().item():.4g}]"
                "; start times must lie in [0, 1) (t = 1 is the data end)."
            )
        field = _TimeChange(model, t_start.to(wider_float(x_0.dtype)))
    grid = uniform_grid(n_steps, device=x_0.device, dtype=wider_float(x_0.dtype))
    if not checkpoint:
        with parametrize.cached():  # normalise constrained weights once per solve, not per call
            return sample_ode(field, x_0, grid, method=method, cond=cond)
    x = x_0.to(wider_float(x_0.dtype))
    for n in range(n_steps):
        # one step on the sub-grid [t_n, t_{n+1}] is bit-identical to step n of the full solve
        step = grid[n : n + 2]
        x = checkpoint_step(sample_ode, field, x, step, method, cond, use_reentrant=False)
    return x


class MLEReconstructionLoss:
    """Gaussian negative log-likelihood of the deployment solver's reconstructions, per example.

        L = ||Phi_theta(x_0) - x_1||^2 / (2 sigma^2) + lambda_FM L_FM(theta; x_1, cond)

    (up to a constant), Phi_theta = :func:`reconstruct` with K = ``n_steps`` steps of ``method``.
    ``start="pairs"``: the batch is packed pairs (B, 2, ...) = stack([x_0, x_1], 1) from
    :func:`make_reconstruction_pairs`. ``start="interpolant"``: the batch is data x_1 (B, ...);
    x_0 ~ N(0, I) and s ~ U(s_min, 1) are drawn from ``generator``, and the solver runs from
    x_s = (1 - s) x_0 + s x_1 at t = s to 1 (no inverse solve, but noisier targets: x_0 is
    independent of x_1, so with s_min near 0 the MLE is mean-seeking and blurs modes). The squared
    norm sums over features (the FM term, if any, is a feature mean, as in FlowMatchingLoss).

    The objective is the same for both variants: pass the fine-tuned network (straightforward)
    or a :class:`ResidualContractionField` (residual) as ``model``. Usable as a trainer
    objective ``objective(model, batch, cond, generator) -> (B,)``.

    Args:
        n_steps: K deployment steps (card 15: 4 Euler steps on the toy).
        method: the deployment scheme; keep it and ``n_steps`` equal to inference.
        sigma: the likelihood's standard deviation (1 is absorbed in the learning rate).
        start: ``"pairs"`` or ``"interpolant"``.
        s_min: lower end of s ~ U(s_min, 1) for ``start="interpolant"`` (0 <= s_min < 1).
        fm_weight: lambda_FM >= 0 of the flow-matching regulariser (0 disables it).
        fm_loss: the regulariser (default ``FlowMatchingLoss()``, conditional OT); needs
            ``fm_weight > 0``.
        checkpoint: per-step gradient checkpointing through the unrolled solver.

    References:
        Fine-Tuning Flow Matching via Maximum Likelihood Estimation of Reconstructions (Li et al.,
        2025), arXiv:2510.02081.

    Example:
        >>> pairs = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)], 1)  # (B, 2, D)
        >>> MLEReconstructionLoss(n_steps=2)(lambda x, t, c=None: torch.ones_like(x), pairs)
        tensor([0., 0., 0.])
    """

    def __init__(
        self,
        n_steps: int = 4,
        method: ODEMethod = "euler",
        sigma: float = 1.0,
        start: MLEStart = "pairs",
        s_min: float | None = None,
        fm_weight: float = 0.0,
        fm_loss: FlowMatchingLoss | None = None,
        checkpoint: bool = False,
    ) -> None:
        _check_n_steps("n_steps", n_steps)
        check_choice("method", method, TABLEAUS)
        _check_positive("sigma", sigma, "sigma=1.0")
        check_choice("start", start, ("pairs", "interpolant"))
        if start == "pairs" and s_min is not None:
            raise ValueError(
                f"s_min={s_min!r} is only used with start='interpolant'; drop s_min or pass "
                "start='interpolant'."
            )
        if start == "interpolant":
            s_min = 0.5 if s_min is None else s_min
            if not _is_real(s_min) or not 0 <= s_min < 1:
                raise ValueError(f"s_min={s_min!r} must lie in [0, 1); pass e.g. s_min=0.5.")
        if not _is_real(fm_weight) or not fm_weight >= 0:
            raise ValueError(f"fm_weight={fm_weight!r} must be >= 0 (0 disables the FM term).")
        if fm_loss is not None and fm_weight == 0:
            raise ValueError(
                "fm_loss was given but fm_weight=0 leaves it unused; pass fm_weight > 0 "
                "(e.g. 0.1) or drop fm_loss."
            )
        self.n_steps = int(n_steps)
        self.method = method
        self.sigma = float(sigma)
        self.start = start
        self.s_min = s_min
        self.fm_weight = float(fm_weight)
        self.fm_loss = fm_loss if fm_loss is not None or fm_weight == 0 else FlowMatchingLoss()
        self.checkpoint = checkpoint

    def nll(
        self,
        model: Field,
        x_0: Tensor,
        x_1: Tensor,
        cond: Tensor | None = None,
        t_start: Tensor | None = None,
    ) -> Tensor:
        """||Phi(x_0) - x_1||^2 / (2 sigma^2) per example, Phi from ``t_start`` (default 0).

        Args: x_0, x_1: (B, ...) of one shape; cond (B, ...) or None; t_start (B,) or None.
        Returns: (B,) negative log-likelihoods (without the constant).
        """
        check_same_shape("x_0", x_0, "x_1", x_1)
        check_batch("cond", cond, x_1.shape[0], ref="x_1")
        x_hat = reconstruct(
            model, x_0, self.n_steps, self.method, cond, t_start, checkpoint=self.checkpoint
        )
        return (x_hat - x_1).square().flatten(1).sum(1) / (2 * self.sigma**2)  # (B,)

    def __call__(
        self,
        model: Field,
        batch: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: batch (B, 2, ...) packed pairs or (B, ...) data (``start``); cond or None.

        Returns: (B,) per-example losses.
        """
        if self.start == "pairs":
            if batch.dim() < 3 or batch.shape[1] != 2:
                raise ValueError(
                    f"batch has shape {tuple(batch.shape)}; start='pairs' trains on packed pairs "
                    "(B, 2, ...) = stack([x_0, x_1], 1) from make_reconstruction_pairs (or use "
                    "start='interpolant' to train on raw data)."
                )
            x_0, x_1 = batch[:, 0], batch[:, 1]  # (B, ...) each
            loss = self.nll(model, x_0, x_1, cond)
        else:
            x_1 = batch
            noise = torch.randn(x_1.shape, generator=generator, device=x_1.device, dtype=x_1.dtype)
            u = torch.rand(x_1.shape[0], generator=generator, device=x_1.device, dtype=x_1.dtype)
            s = self.s_min + (1 - self.s_min) * u  # (B,) ~ U(s_min, 1)
            s_ = expand_like(s, x_1)
            x_s = (1 - s_) * noise + s_ * x_1  # card 15: the interpolant start
            loss = self.nll(model, x_s, x_1, cond, t_start=s)
        if self.fm_loss is not None:
            loss = loss + self.fm_weight * self.fm_loss(model, x_1, cond, generator)
        return loss


class _SpectralNormalize(nn.Module):
    """W -> W / ||W||_2 with the exact largest singular value.

    torch's ``spectral_norm`` estimates ||W||_2 by power iteration, a lower bound between
    updates, so W / sigma_est can exceed norm 1; the exact value keeps Lip_x(h) <= rho a
    guarantee (to rounding) at every step of training.
    """

    def forward(self, weight: Tensor) -> Tensor:
        return weight / torch.linalg.matrix_norm(weight, ord=2)


def _normalized_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    parametrize.register_parametrization(layer, "weight", _SpectralNormalize())
    return layer


class ResidualContractionField(nn.Module):
    """v(x, t) = v_ref(x, t) + r_phi(x, t): a frozen base plus a contracting correction.

        r_phi(x, t) = -gamma_phi(t) (x - h_phi(x, t)),   gamma_phi(t) = softplus(g_phi(t)) >= 0,
        h_phi(x, t) = rho W_L a(... a(W_1 x + A e(t) + b_1) ...),  ||W_l||_2 = 1,

    with a 1-Lipschitz activation a and exactly spectrally normalised W_l, so Lip_x(h_phi) <= rho
    (the time features A e(t) enter additively and do not change the Lipschitz constant in x).
    Hence dr/dx = -gamma (I - J_h) has every eigenvalue of its symmetric part <= -gamma (1 - rho):
    the correction contracts nearby trajectories (an artificial viscosity). gamma starts at
    ``gamma_init`` for every t (g's output layer is zero), so r starts near 0.

    The base is frozen in place (``requires_grad_(False)``, kept in eval mode); only
    :meth:`residual_parameters` (phi) train. ``cond`` reaches the base only.

    Args:
        base: the pretrained velocity ``base(x, t, cond)`` (a module or any callable).
        dim: D, features per example (``x[0].numel()``).
        hidden: width of h_phi and g_phi.
        depth: hidden layers of h_phi (>= 1).
        rho: the Lipschitz bound of h_phi, 0 <= rho < 1 (card 15: 0.9).
        gamma_init: gamma_phi(t) at initialisation, > 0 (card 15: about 1e-2).
        time_embed_dim: sinusoidal time features of h_phi and g_phi.
        activation: ``"tanh"`` or ``"relu"`` (both 1-Lipschitz).

    References:
        Fine-Tuning Flow Matching via Maximum Likelihood Estimation of Reconstructions (Li et al.,
        2025), arXiv:2510.02081.
        Spectral Normalization for Generative Adversarial Networks (Miyato et al., 2018),
        arXiv:1802.05957.

    Example:
        >>> field = ResidualContractionField(lambda x, t, c=None: torch.zeros_like(x), dim=2)
        >>> x, t = torch.randn(5, 2), torch.rand(5)
        >>> field(x, t).shape, torch.allclose(field(x, t), field.residual(x, t))
        (torch.Size([5, 2]), True)
        >>> round(field.gamma(t)[0].item(), 6)
        0.01
    """

    def __init__(
        self,
        base: Field,
        dim: int,
        hidden: int = 64,
        depth: int = 2,
        rho: float = 0.9,
        gamma_init: float = 1e-2,
        time_embed_dim: int = 16,
        activation: LipschitzActivation = "tanh",
    ) -> None:
        super().__init__()
        if not callable(base):
            raise TypeError(f"base={base!r} is not callable; pass a field base(x, t, cond).")
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if not _is_real(rho) or not 0 <= rho < 1:
            raise ValueError(
                f"rho={rho!r} must lie in [0, 1) so that Lip_x(h) < 1 and the residual "
                "contracts; pass e.g. rho=0.9."
            )
        _check_positive("gamma_init", gamma_init, "gamma_init=1e-2")
        _check_positive("time_embed_dim", time_embed_dim, "time_embed_dim=16")
        check_choice("activation", activation, ("tanh", "relu"))
        if isinstance(base, nn.Module):
            base.requires_grad_(False).eval()
        self.base = base
        self.dim, self.rho = dim, float(rho)
        self.time_embed = SinusoidalEmbedding(int(time_embed_dim))
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        # h_phi: only the x-path is normalised; the time features shift the first layer.
        self.h_in = _normalized_linear(dim, hidden)
        self.h_time = nn.Linear(int(time_embed_dim), hidden)
        layers: list[nn.Module] = [act()]
        for _ in range(depth - 1):
            layers += [_normalized_linear(hidden, hidden), act()]
        layers.append(_normalized_linear(hidden, dim))
        self.h_net = nn.Sequential(*layers)
        # g_phi: gamma = softplus(g(t)) starts at gamma_init for every t.
        self.g_net = nn.Sequential(
            nn.Linear(int(time_embed_dim), hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )
        nn.init.zeros_(self.g_net[-1].weight)
        with torch.no_grad():
            self.g_net[-1].bias.fill_(gamma_init + math.log(-math.expm1(-gamma_init)))

    def train(self, mode: bool = True) -> ResidualContractionField:
        """Set phi's training mode; the frozen base stays in eval mode."""
        super().train(mode)
        if isinstance(self.base, nn.Module):
            self.base.eval()
        return self

    def residual_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters phi of h_phi and g_phi (the base's are excluded)."""
        for name, p in self.named_parameters():
            if not name.startswith("base."):
                yield p

    def gamma(self, t: Tensor) -> Tensor:
        """gamma_phi(t) = softplus(g_phi(e(t))) >= 0. Args: t (B,). Returns: (B,)."""
        return F.softplus(self.g_net(self.time_embed(t))).squeeze(-1)

    def h(self, x: Tensor, t: Tensor) -> Tensor:
        """h_phi(x, t), rho-Lipschitz in x. Args: x (B, ...), t (B,). Returns: x's shape."""
        B = x.shape[0]
        if x[0].numel() != self.dim:
            raise ValueError(
                f"x has shape {tuple(x.shape)} ({x[0].numel()} features per example) but the "
                f"residual was built with dim={self.dim}; pass dim=x[0].numel()."
            )
        z = self.h_in(x.reshape(B, self.dim)) + self.h_time(self.time_embed(t.to(x.dtype)))
        return (self.rho * self.h_net(z)).reshape(x.shape)

    def residual(self, x: Tensor, t: Tensor) -> Tensor:
        """r_phi(x, t) = -gamma_phi(t) (x - h_phi(x, t)). Returns: x's shape."""
        return -expand_like(self.gamma(t.to(x.dtype)), x) * (x - self.h(x, t))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, ...), t (B,), cond for the base. Returns: (B, ...) v_ref + r_phi."""
        return self.base(x, t, cond) + self.residual(x, t)

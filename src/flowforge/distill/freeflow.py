"""FreeFlow: data-free flow-map distillation, sampling only from the prior (card 07).

A student flow map X_theta is distilled from a frozen teacher velocity u using noise z ~ N(0, I)
alone: the *prediction* objective makes the student's own trajectory t -> X(z, 0, t) obey the
teacher ODE, with the teacher queried at the student's state (never at data-noised states), and
the *correction* objective matches the noising marginals of the student's one-step samples to the
teacher's by variational score / velocity distillation with a fake velocity net g_psi.

RECONSTRUCTED LOSS FORMS. The card (and so this file) reconstructs the losses in the
MeanFlow / VSD style from the paper's summary; the official code releases sampling only, and the
paper's exact equations could not be checked here. The pieces that may differ from the paper are
configurable: the distance of the prediction term (``pred_metric``), the two-time fraction, the
correction weight lambda, its time range and weighting w(tau), and the fake net's lr and steps.

Card -> flowforge conventions (card: tau = 1 noise, tau = 0 data; here t = 0 noise x_0 = z,
t = 1 data x_1). With t = 1 - tau_card and our network output F = -F_card:

    card f(z, tau) = z - (1 - tau) F_card(z, tau)   ->   X(z, 0, t) = z + t F(z, 0, t)
    f(z, 1) = z (prior time)                         ->   X(z, 0, 0) = z exactly
    one step x_hat = z - F_card(z, 0)                ->   x_hat = X(z, 0, 1) = z + F(z, 0, 1)
    u_card = -u, d/dtau F_card = +d/dt F             ->   F_tgt = u(x_t, t) - t dF/dt
    two-time map X_{s -> t} with (s - t)             ->   X(x, s, t) = x + (t - s) F(x, s, t)
    noising x_s = (1 - s) x + s eps                  ->   x_tau = tau x + (1-tau) eps, tau = 1 - s
    card L_corr = w <sg(u_card - g_card), x_s>       ->   L_corr = w <sg(g - u), x_tau> / D

The network is a two-time field ``model(x, torch.stack([s, t], -1), cond)`` (``n_times=2``)
returning F(x, s, t); the map from the prior is s = 0. Few-step sampling composes X over a grid
0 = t_0 < ... < t_n = 1; the start states x_s (s > 0) it needs are trained data-free too: they are
the student's own states X(z, 0, s) (a ``two_time_fraction`` of each batch).

References:
    Flow Map Distillation Without Data (Tong, Ma, Xie & Jaakkola, 2025), arXiv:2511.19428.
    How to Build a Consistency Model: Learning Flow Maps via Self-Distillation (Boffi,
    Albergo & Vanden-Eijnden, 2025), arXiv:2505.18825 (Lagrangian map distillation).
    Mean Flows for One-step Generative Modeling (Geng et al., 2025), arXiv:2505.13447 (JVP target).
    One-step Diffusion with Distribution Matching Distillation (Yin et al., 2024),
    arXiv:2311.18828; ProlificDreamer (Wang et al., 2023), arXiv:2305.16213 (VSD correction).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from flowforge.distill.freeflow_targets import (
    CorrWeighting,
    MapNet,
    Metric,
    correction_loss,
    fake_velocity_loss,
    freeflow_map,
    prediction_target,
)
from flowforge.losses.distances import mse
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.protocols import Field, TimeSampler
from flowforge.utils import (
    average_gradients,
    check_batch,
    check_choice,
    expand_like,
    randn_like_gen,
    wider_float,
)

__all__ = [
    "FreeFlowLoss",
    "freeflow_sample",
    "student_from_teacher",
]


class FreeFlowLoss:
    """FreeFlow objective (card 07, reconstructed loss forms), one value per example.

    Data-free: x_1's values are never read; its shape, batch size, dtype and device set the
    prior draw z ~ N(0, I) of the same shape, and ``cond`` is passed to model, teacher and fake.

        (s, t):  t ~ time_sampler, s = 0; for a ``two_time_fraction`` of the batch
                 (s, t) = sorted pair of U(0, 1) draws and x_s = sg(X(z, 0, s))
        L_pred = pred_metric(F(x_s, s, t), F_tgt)            (see ``prediction_target``)
        x_hat  = X(z, 0, 1) = z + F(z, 0, 1)                  (one-step sample, with graph)
        L_corr = w(tau) <sg(g - u)(x_tau, tau), x_tau> / D,   tau ~ U(tau_min, tau_max)
        L      = pred_weight L_pred + corr_weight L_corr

    The fake velocity net g_psi (card: initialised from the teacher) is state of the objective:
    on every call with gradients enabled it first takes ``fake_steps`` Adam steps of
    ``fake_velocity_loss`` on the detached x_hat (the card's 1:1 alternation, fake first so it
    tracks the current student), then L_corr is evaluated with it. That state is not saved by
    ``train``'s checkpoints and is not synchronised across DDP ranks. With ``corr_weight = 0``
    (prediction only) no fake net is built or used.

    Time features: the JVP differentiates F in t through the network's time features. With the
    models' sinusoidal features (scale 1000, ~160 periods over [0, 1]) the stop-gradient target
    diverged on 8 gaussians (loss 5.6 -> 1e3..1e5 within 150 steps, teacher or random init);
    with raw time (``MLPConfig(time_embed_dim=0)``) it converged (benchmarks/freeflow_2d.py).
    Prefer smooth time inputs for the student (and a raw-time teacher to initialise it from).

    Args:
        teacher: frozen velocity field ``teacher(x, t, cond)`` (t = 0 noise, t = 1 data), with
            any CFG baked in; always called under ``torch.no_grad``.
        pred_weight: weight of L_pred (>= 0).
        corr_weight: lambda of L_corr (card: 0.1 to 1; 0 switches the correction off).
        time_sampler: density of t for the prior map (default U(0, 1)).
        two_time_fraction: share of each batch trained with a start time s > 0 (needed by the
            few-step sampler); 0 trains the prior map only.
        pred_metric: ``(pred, target) -> (B,)`` distance of the prediction term (default mse).
        fake: the fake velocity network; None deep-copies the teacher (must then be a Module).
        fake_lr: Adam learning rate of the fake net (card: 1e-3 on toys).
        fake_steps: fake-net updates per call (card: at least 1).
        tau_min, tau_max: range of the correction's noising time (card: s ~ U(0.02, 0.98)).
        corr_weighting: w(tau), ``"uniform"`` (w = 1) or ``"dmd"`` (see ``correction_loss``).

    References:
        Flow Map Distillation Without Data (Tong et al., 2025), arXiv:2511.19428.

    Example:
        >>> teacher = MLPField(MLPConfig(dim=2, hidden=16)).requires_grad_(False)
        >>> student = student_from_teacher(teacher)
        >>> loss = FreeFlowLoss(teacher, corr_weight=0.5)
        >>> x_1 = torch.full((8, 2), float("nan"))  # data-free: values are never read
        >>> out = loss(student, x_1, generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.isfinite().all())
        (torch.Size([8]), True)
    """

    def __init__(
        self,
        teacher: Field,
        pred_weight: float = 1.0,
        corr_weight: float = 0.0,
        time_sampler: TimeSampler | None = None,
        two_time_fraction: float = 0.25,
        pred_metric: Metric = mse,
        fake: nn.Module | None = None,
        fake_lr: float = 1e-3,
        fake_steps: int = 1,
        tau_min: float = 0.02,
        tau_max: float = 0.98,
        corr_weighting: CorrWeighting = "uniform",
    ) -> None:
        if not callable(teacher):
            raise TypeError(f"teacher={teacher!r} is not callable; pass a field u(x, t, cond).")
        for name, w in (("pred_weight", pred_weight), ("corr_weight", corr_weight)):
            if w < 0:
                raise ValueError(f"{name}={w!r} must be >= 0 (0 switches the term off).")
        if pred_weight == 0 and corr_weight == 0:
            raise ValueError("pred_weight and corr_weight are both 0; make one positive.")
        if not 0 <= two_time_fraction <= 1:
            raise ValueError(
                f"two_time_fraction={two_time_fraction!r} must lie in [0, 1] (0: prior map only)."
            )
        if not 0 < tau_min < tau_max < 1:
            raise ValueError(
                f"tau_min={tau_min!r}, tau_max={tau_max!r} must satisfy 0 < tau_min < tau_max "
                "< 1 (card: 0.02, 0.98)."
            )
        if fake_lr <= 0 or fake_steps < 1:
            raise ValueError(
                f"fake_lr={fake_lr!r} must be > 0 and fake_steps={fake_steps!r} >= 1 (card: 1)."
            )
        check_choice("corr_weighting", corr_weighting, ("uniform", "dmd"))
        if corr_weight > 0 and fake is None and not isinstance(teacher, nn.Module):
            raise TypeError(
                f"teacher is a {type(teacher).__name__}, not an nn.Module, so the fake net "
                "cannot be copied from it; pass fake=<a velocity nn.Module> or corr_weight=0."
            )
        self.teacher = teacher
        self.pred_weight, self.corr_weight = pred_weight, corr_weight
        self.time_sampler, self.two_time_fraction = time_sampler, two_time_fraction
        self.pred_metric = pred_metric
        self.fake_lr, self.fake_steps = fake_lr, fake_steps
        self.tau_min, self.tau_max, self.corr_weighting = tau_min, tau_max, corr_weighting
        self.fake: nn.Module | None = fake
        self.fake_optimizer: torch.optim.Optimizer | None = None
        self._pending: dict | None = None  # loaded fake-net state, applied on first use

    def state_dict(self) -> dict:
        """The fake net and its optimizer (correction term), for checkpoints (``train`` saves it).

        Example:
            >>> FreeFlowLoss(lambda x, t, cond=None: x).state_dict()
            {'fake': None, 'fake_optimizer': None}
        """
        if self._pending is not None:
            return self._pending
        fake = None if self.fake is None else dict(self.fake.state_dict())
        opt = None if self.fake_optimizer is None else self.fake_optimizer.state_dict()
        return {"fake": fake, "fake_optimizer": opt}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; applied when the fake net is next used."""
        self._pending = state if state["fake"] is not None else None
        if self._pending is not None and self.fake is not None and self.fake_optimizer:
            self._apply_pending()

    def _apply_pending(self) -> None:
        self.fake.load_state_dict(self._pending["fake"])
        if self._pending["fake_optimizer"] is not None:
            self.fake_optimizer.load_state_dict(self._pending["fake_optimizer"])
        self._pending = None

    def _fake(self, ref: Tensor) -> nn.Module:
        """The fake net on ref's device with its optimizer, created on first use."""
        if self.fake is None:
            self.fake = copy.deepcopy(self.teacher)  # card: fake net initialised from teacher
        self.fake = self.fake.to(ref.device).train().requires_grad_(True)
        if self.fake_optimizer is None:
            self.fake_optimizer = torch.optim.Adam(self.fake.parameters(), lr=self.fake_lr)
        if self._pending is not None:
            self._apply_pending()
        return self.fake

    def _pairs(self, z: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        B, kw = z.shape[0], dict(generator=generator, device=z.device, dtype=z.dtype)
        if self.time_sampler is None:
            t = torch.rand(B, **kw)
        else:
            t = self.time_sampler(B, generator=generator, device=z.device, dtype=z.dtype)
        s = torch.zeros_like(t)
        if self.two_time_fraction > 0:
            pair = torch.rand(B, 2, **kw).sort(dim=1).values  # uniform on {0 <= s <= t <= 1}
            two = torch.rand(B, **kw) < self.two_time_fraction
            s, t = torch.where(two, pair[:, 0], s), torch.where(two, pair[:, 1], t)
        return s, t

    def __call__(
        self,
        model: MapNet,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: two-time network; x_1: (B, ...) (shape only); cond: (B,) or None.

        Returns: (B,) per-example losses.
        """
        if x_1.dim() < 2:
            raise ValueError(f"x_1 has shape {tuple(x_1.shape)}; pass a batch (B, ...).")
        check_batch("cond", cond, x_1.shape[0], "x_1")
        z = randn_like_gen(torch.empty_like(x_1), generator)  # prior only: x_1 is never read
        loss = z.new_zeros(z.shape[0])
        if self.pred_weight > 0:
            s, t = self._pairs(z, generator)
            with torch.no_grad():  # start states on the student's own path (data-free)
                x_s = (
                    torch.where(
                        expand_like(s > 0, z),
                        freeflow_map(model, z, torch.zeros_like(s), s, cond),
                        z,
                    )
                    if self.two_time_fraction > 0
                    else z
                )
            F, F_tgt, _ = prediction_target(model, self.teacher, x_s, s, t, cond)
            loss = loss + self.pred_weight * self.pred_metric(F, F_tgt)
        if self.corr_weight > 0:
            B = z.shape[0]
            x_hat = freeflow_map(model, z, z.new_zeros(B), z.new_ones(B), cond)  # one step
            fake = self._fake(z)
            kw = dict(generator=generator, device=z.device, dtype=z.dtype)
            if torch.is_grad_enabled():  # psi step(s) first, so g tracks the current student
                for _ in range(self.fake_steps):
                    tau = self.tau_min + (self.tau_max - self.tau_min) * torch.rand(B, **kw)
                    eps = randn_like_gen(z, generator)
                    fake_loss = fake_velocity_loss(fake, x_hat, tau, eps, cond).mean()
                    self.fake_optimizer.zero_grad(set_to_none=True)
                    fake_loss.backward()
                    average_gradients(fake)  # one fake net across DDP ranks
                    self.fake_optimizer.step()
            tau = self.tau_min + (self.tau_max - self.tau_min) * torch.rand(B, **kw)
            eps = randn_like_gen(z, generator)
            corr = correction_loss(x_hat, self.teacher, fake, tau, eps, cond, self.corr_weighting)
            loss = loss + self.corr_weight * corr
        return loss


def freeflow_sample(
    model: MapNet,
    x_0: Tensor,
    n_steps: int = 1,
    cond: Tensor | None = None,
    time_grid: Tensor | None = None,
) -> Tensor:
    """Few-step sampling with the student map: x_{k+1} = X(x_k, t_k, t_{k+1}), 1 NFE per step.

    With n_steps = 1 this is the one-step sample x_hat = z + F(z, 0, 1) (card: f(z, 0)). The
    state is kept in float32 or wider; no ``torch.no_grad`` inside (differentiable).

    Args:
        model: two-time network returning F.
        x_0: (B, ...) prior samples at t = 0.
        n_steps: number of map evaluations on the uniform grid t_k = k / n_steps.
        cond: labels passed to the model, or None.
        time_grid: optional increasing (n_steps + 1,) grid from 0 to 1 instead of the uniform one.

    Returns:
        (B, ...) samples at t = 1.

    Example:
        >>> F = lambda x, tt, c=None: (2.0 - x) / (1 - tt[:, :1])  # exact map: point mass at 2
        >>> freeflow_sample(F, torch.zeros(2, 1), n_steps=4).flatten().tolist()
        [2.0, 2.0]
    """
    if time_grid is None:
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r}; pass a positive number of steps.")
        time_grid = torch.linspace(0, 1, n_steps + 1, device=x_0.device)
    x = x_0.to(wider_float(x_0.dtype))
    time_grid = time_grid.to(device=x.device, dtype=x.dtype)
    if time_grid.dim() != 1 or len(time_grid) < 2 or bool((time_grid.diff() <= 0).any()):
        raise ValueError(f"time_grid={time_grid.tolist()!r} must be increasing with >= 2 points.")
    B = x.shape[0]
    for t_cur, t_next in zip(time_grid[:-1], time_grid[1:], strict=True):
        x = freeflow_map(model, x, t_cur.expand(B), t_next.expand(B), cond)
    return x


def student_from_teacher(teacher: MLPField | UNetField) -> MLPField | UNetField:
    """A two-time student initialised from a one-time teacher (card: student from teacher).

    Copies every weight and routes the teacher's time features to the student's start time s,
    with zero weights on the end time t, so the initial map is one Euler step of the teacher:
    F(x, s, t) = u(x, s), X(x, s, t) = x + (t - s) u(x, s). Supports ``MLPField`` (first linear
    layer over [x, e(s), e(t), c]) and ``UNetField`` (first linear layer of the time MLP over
    [e(s), e(t)]). The student is in train mode with gradients on.

    Args:
        teacher: a one-time ``MLPField`` or ``UNetField`` (``n_times=1``).

    Returns:
        The two-time network of the same class and config except ``n_times=2``.

    Example:
        >>> u = MLPField(MLPConfig(dim=2, hidden=16))
        >>> x, t = torch.randn(3, 2), torch.rand(3)
        >>> F = student_from_teacher(u)
        >>> bool(torch.allclose(F(x, torch.stack([t, torch.rand(3)], -1)), u(x, t)))
        True
    """
    if not isinstance(teacher, (MLPField, UNetField)) or teacher.config.n_times != 1:
        raise TypeError(
            f"teacher is a {type(teacher).__name__}; pass a one-time MLPField or UNetField "
            "(n_times=1), or build the two-time student yourself (n_times=2)."
        )
    cfg = dataclasses.replace(teacher.config, n_times=2)
    student = (MLPField if isinstance(teacher, MLPField) else UNetField)(cfg)
    student = student.to(next(teacher.parameters()).dtype)
    src = teacher.state_dict()
    if isinstance(cfg, MLPConfig):
        key, start = "net.0.weight", cfg.dim  # columns [x (D), e(s) (E), e(t) (E), c]
    else:
        assert isinstance(cfg, UNetConfig)
        key, start = "time_embed.1.weight", 0  # columns [e(s) (E), e(t) (E)]
    E = cfg.time_embed_dim or 1
    w_old = src[key]
    w = torch.zeros(w_old.shape[0], w_old.shape[1] + E, dtype=w_old.dtype)
    w[:, : start + E] = w_old[:, : start + E]  # x and e(s) <- x and e(t) of the teacher
    w[:, start + 2 * E :] = w_old[:, start + E :]  # class features; e(t) columns stay 0
    src = dict(src, **{key: w})
    student.load_state_dict(src)
    return student.train().requires_grad_(True)

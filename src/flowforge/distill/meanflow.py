"""MeanFlow: one-step generation by regressing the average velocity (card 06), plus DM1.

The average velocity over [t, r] (t <= r, flowforge time: t = 0 noise x_0, t = 1 data x_1) is

    u(x_t, t, r) = 1 / (r - t) int_t^r v(x_s, s) ds,   so   x_r = x_t + (r - t) u(x_t, t, r),

and differentiating (r - t) u = int_t^r v in t along the trajectory (dx_t/dt = v) gives the
MeanFlow identity u = v + (r - t) du/dt, du/dt = v . d_x u + d_t u (r fixed). The network is
regressed on the stop-gradient target with one forward-mode JVP, tangent (v, 1, 0) along
(x, t, r). At r = t the target is v itself (flow matching), so one network learns both.

Card (tau = 0 data, tau = 1 noise) -> flowforge:

    card z_tau = (1 - tau) x + tau e           x_t = t x_1 + (1 - t) x_0,  t = 1 - tau
    card v = e - x                             v = x_1 - x_0 = -v_card
    card r_c <= t_c, z_r = z_t - (t_c - r_c) u_c     t = 1 - t_c <= r = 1 - r_c,
                                                     x_r = x_t + (r - t) u,  u = -u_card
    card net inputs (t_c, h = t_c - r_c)       (t, h = r - t)  (``time_inputs="start_gap"``)
    card du_c/dt_c = v_c d_z u_c + d_tc u_c    = du/dt = v d_x u + d_t u (both signs flip)
    card u_tgt = v_c - clip(t_c - r_c) du/dt   u_tgt = v + clip(r - t, 0, 1) du/dt
    card (t_c, r_c) = (max, min) of two        (t, r) = (min, max) of two logit-normal draws,
         logit-normal(-0.4, 1) draws                logit-normal(+0.4, 1) (logit(1 - tau) =
                                                    -logit(tau))
    card 1-NFE x = z_1 - u_c(z_1, 0, 1)        x_1 = x_0 + u(x_0, 0, 1)
    card CFG interval [t_start, t_end]         [1 - t_end, 1 - t_start], given in our time

The guided target (CFG inside MeanFlow) is linear in v and u, so it reads the same in both
conventions. DM1 adds ``lambda * L_disp(H)`` on a hidden layer's features H
(``flowforge.distill.dispersive``).

References:
    Mean Flows for One-step Generative Modeling (Geng, Deng, Bai, Kolter & He, 2025),
    arXiv:2505.13447 (code: Gsunshine/meanflow; PyTorch port zhuyu-cs/MeanFlow).
    DM1: MeanFlow with Dispersive Regularization for 1-Step Robotic Manipulation (Zou et al.,
    2025) (code: Guowei-Zou/dm1-release).
    Diffuse and Disperse: Image Generation with Representation Regularization (Wang & He,
    2025), arXiv:2506.09027.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.func import jvp

from flowforge.distill.dispersive import capture_features
from flowforge.guidance.dropout import drop_condition
from flowforge.losses.time_samplers import LogitNormalTime
from flowforge.protocols import TimeSampler
from flowforge.utils import (
    check_batch,
    check_choice,
    expand_like,
    per_example,
    randn_like_gen,
    unwrap_ddp,
    wider_float,
)

__all__ = [
    "MeanFlowGuidance",
    "MeanFlowLoss",
    "TimeInputs",
    "average_velocity",
    "meanflow_guided_velocity",
    "meanflow_sample",
    "meanflow_target",
    "meanflow_times",
]

TimeInputs = Literal["start_gap", "start_end"]
TwoTimeNet = Callable[..., Tensor]  # model(x (B, ...), times (B, 2), cond) -> (B, ...)
UFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # u(x, t, r) -> (B, ...)


def meanflow_times(t: Tensor, r: Tensor, time_inputs: TimeInputs = "start_gap") -> Tensor:
    """The (B, 2) time input of an ``n_times=2`` network for the interval [t, r].

    ``"start_gap"`` gives (t, r - t), the official MeanFlow conditioning (t, h) (card: the net
    takes (t, t - r) in its time); ``"start_end"`` gives (t, r).

    Args:
        t: (B,) start times (the state's time). r: (B,) end times.
        time_inputs: ``"start_gap"`` or ``"start_end"``.

    Returns:
        (B, 2) times.

    Example:
        >>> meanflow_times(torch.tensor([0.25]), torch.tensor([1.0])).tolist()
        [[0.25, 0.75]]
    """
    second = r - t if time_inputs == "start_gap" else r
    return torch.stack([t, second], dim=-1)


def average_velocity(
    model: TwoTimeNet,
    x_t: Tensor,
    t: Tensor,
    r: Tensor,
    cond: Tensor | None = None,
    time_inputs: TimeInputs = "start_gap",
) -> Tensor:
    """u_theta(x_t, t, r) = model(x_t, meanflow_times(t, r), cond), the average velocity.

    Args:
        model: an ``n_times=2`` network.
        x_t: (B, ...) states at time t.
        t, r: (B,) start and end times (t <= r moves towards the data).
        cond: (B,) labels or None.
        time_inputs: how (t, r) are fed to the network (see ``meanflow_times``).

    Returns:
        (B, ...) u, so that x_r ~= x_t + (r - t) u.

    Example:
        >>> model = lambda x, tt, c=None: torch.ones_like(x)
        >>> average_velocity(model, torch.zeros(2, 3), torch.zeros(2), torch.ones(2)).shape
        torch.Size([2, 3])
    """
    return model(x_t, meanflow_times(t, r, time_inputs), cond)


def meanflow_target(
    u_fn: UFn, x_t: Tensor, t: Tensor, r: Tensor, v: Tensor, has_aux: bool = False
) -> tuple[Tensor, ...]:
    """u(x_t, t, r), its stop-gradient MeanFlow target and du/dt from one forward-mode JVP.

    (u, du/dt) = jvp(u_fn, (x_t, t, r), (v, 1, 0))      total derivative along dx/dt = v
    u_tgt      = sg(v + clip(r - t, 0, 1) du/dt)        (card: v - clip(t - r) du/dt)

    For the exact u of the flow of v, u_tgt = u (card 06, check 1). The tangent is on the start
    time t (the state's time), not on r; if the network takes h = r - t, ``u_fn`` must compute
    h from (t, r) so the JVP differentiates through that map (card pitfall 1).

    Args:
        u_fn: ``u_fn(x, t, r) -> (B, ...)`` (with ``has_aux``: ``-> ((B, ...), aux)``).
        x_t: (B, ...) states. t, r: (B,) times, t <= r. v: (B, ...) the velocity at (x_t, t)
            (conditional x_1 - x_0 in training, or a guided velocity).
        has_aux: ``u_fn`` also returns an auxiliary output (passed through, not differentiated
            in the tangent direction).

    Returns:
        (u, u_tgt, dudt) or, with ``has_aux``, (u, u_tgt, dudt, aux); u carries the gradient to
        the parameters, u_tgt and dudt are detached.

    References:
        Mean Flows (Geng et al., 2025), arXiv:2505.13447, Eq. 6, 8, 10 and Alg. 1.

    Example:
        >>> x_star = torch.tensor([[1.0, -2.0]])  # all data at x*: u = (x* - x) / (1 - t)
        >>> u_fn = lambda x, t, r: (x_star - x) / (1 - t[:, None])
        >>> x, t, r = torch.zeros(1, 2), torch.tensor([0.5]), torch.tensor([0.9])
        >>> u, u_tgt, _ = meanflow_target(u_fn, x, t, r, v=u_fn(x, t, t))
        >>> torch.allclose(u, u_tgt)
        True
    """
    tangents = (v, torch.ones_like(t), torch.zeros_like(r))
    if has_aux:
        u, dudt, aux = jvp(u_fn, (x_t, t, r), tangents, has_aux=True)
    else:
        u, dudt = jvp(u_fn, (x_t, t, r), tangents)
    gap = expand_like((r - t).clamp(0, 1), x_t)  # (B, 1, ..., 1), card: clip(t - r, 0, 1)
    u_tgt = (v + gap * dudt).detach()  # stop-gradient on the whole target
    return (u, u_tgt, dudt.detach(), aux) if has_aux else (u, u_tgt, dudt.detach())


@torch.no_grad()
def meanflow_guided_velocity(
    model: TwoTimeNet,
    x_t: Tensor,
    t: Tensor,
    v: Tensor,
    cond: Tensor,
    null_class: int,
    omega: Tensor | float,
    kappa: Tensor | float,
    time_inputs: TimeInputs = "start_gap",
) -> Tensor:
    """Guided training velocity v~ = omega v + (1 - omega - kappa) u(x_t, t, t | 0) + kappa
    u(x_t, t, t | c) of CFG inside MeanFlow (no gradient).

    The network's own instantaneous predictions (r = t) stand in for the unknown marginal
    fields; the effective guidance scale is omega / (1 - kappa). kappa = 0 gives
    u(0) + omega (v - u(0)). Linear in v and u, so identical in the card's time convention.

    Args:
        model: an ``n_times=2`` class-conditional network.
        x_t: (B, ...) states. t: (B,) times. v: (B, ...) conditional velocity x_1 - x_0.
        cond: (B,) labels. null_class: the unconditional label (``model.null_class``).
        omega, kappa: scalars or (B,) per-example values.
        time_inputs: as in ``meanflow_times``.

    Returns:
        (B, ...) v~, detached.

    References:
        Mean Flows (Geng et al., 2025), arXiv:2505.13447, Sec. 4.2 and App. B.1 (Eq. 21).

    Example:
        >>> model = lambda x, tt, c: c[:, None].to(x.dtype).expand_as(x)  # u = label
        >>> x, t, v = torch.zeros(2, 1), torch.rand(2), torch.ones(2, 1)
        >>> meanflow_guided_velocity(model, x, t, v, torch.tensor([3, 3]), 0, 1.0, 0.5)[:, 0]
        tensor([2.5000, 2.5000])
    """
    omega_ = expand_like(per_example("omega", omega, x_t), x_t)  # (B, 1, ..., 1)
    kappa_ = expand_like(per_example("kappa", kappa, x_t), x_t)
    null = torch.full_like(cond, null_class)
    u_null = average_velocity(model, x_t, t, t, null, time_inputs)
    v_tilde = omega_ * v + (1 - omega_ - kappa_) * u_null
    if bool((kappa_ != 0).any()):
        v_tilde = v_tilde + kappa_ * average_velocity(model, x_t, t, t, cond, time_inputs)
    return v_tilde


@dataclass
class MeanFlowGuidance:
    """CFG inside MeanFlow: train on a guided target, sample with 1 NFE and no guidance.

    Args:
        omega: weight of the conditional velocity v (card default 1.0).
        kappa: weight of the network's conditional prediction (0.5; effective scale
            omega / (1 - kappa) = 2).
        t_interval: (t_min, t_max) in flowforge time where guidance applies; outside it omega
            -> 1, kappa -> 0 (card [0, 1]; the card's [t_start, t_end] is [1 - t_end,
            1 - t_start] here).
        class_dropout: probability of replacing a label by the null class; dropped examples
            regress on the unguided v (card 0.1).
        null_class: the null label; None reads ``model.null_class``.

    Example:
        >>> MeanFlowGuidance().omega / (1 - MeanFlowGuidance().kappa)  # effective scale
        2.0
    """

    omega: float = 1.0
    kappa: float = 0.5
    t_interval: tuple[float, float] = (0.0, 1.0)
    class_dropout: float = 0.1
    null_class: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.t_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"t_interval={self.t_interval!r}; need 0 <= t_min <= t_max <= 1.")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError(f"class_dropout={self.class_dropout!r} must be in [0, 1] (0.1).")
        if self.kappa >= 1:
            raise ValueError(f"kappa={self.kappa!r} must be < 1 (scale omega / (1 - kappa)).")


class MeanFlowLoss:
    """MeanFlow objective with adaptive weighting, optional in-training CFG and DM1 dispersion.

    x_0 ~ N(0, I), x_1 data, (t, r) from ``sample_times`` (t <= r), x_t = t x_1 + (1 - t) x_0,
    v = x_1 - x_0 (or the guided v~), then with u_theta(x, t, r) = model(x, (t, r - t), cond):

        (u, du/dt) = jvp(u_theta, (x_t, t, r), (v, 1, 0))
        u_tgt      = sg(v + clip(r - t, 0, 1) du/dt)
        err        = ||u - u_tgt||^2                   (sum over features)
        loss_i     = err / sg((err + c)^p) + lambda L_disp(H)

    H are the features of the submodules ``feature_modules`` in the same forward pass (Wang &
    He's recipe; the JVP's primal pass, read with forward hooks), L_disp summed over them (DM1
    sums over its embeddings). The dispersive term is a batch scalar added to every example, so
    the batch mean is L_MeanFlow + lambda L_disp. See the module docstring for the card's
    symbols in flowforge time.

    Time features matter: the JVP differentiates the network in t, so high-frequency time
    embeddings (``SinusoidalEmbedding``'s scale 1000) give large, noisy du/dt early in training.
    On 2-D toys feed raw times (``MLPConfig(time_embed_dim=0)``, the card's baseline): 500
    steps on a Gaussian reach a one-step map error of 0.16 with raw times and 0.83 with the
    default embedding (tests/distill/test_meanflow.py).

    Args:
        time_sampler: density of the two independent draws whose (min, max) give (t, r)
            (default ``LogitNormalTime(0.4, 1.0)``, the card's logit-normal(-0.4, 1) in its
            time).
        flow_map_ratio: fraction of the batch that keeps r != t (card 0.25, DM1 0.5); the
            first ``round((1 - ratio) B)`` examples get r = t (official code: a fixed count).
        p, c: adaptive weight 1 / (err + c)^p (card p = 1, c = 0.01; p = 0 is plain MSE).
        time_inputs: the network's two times: ``"start_gap"`` (t, r - t), the official
            conditioning, or ``"start_end"`` (t, r). The sampler must use the same.
        guidance: a ``MeanFlowGuidance`` to train class-conditional models with the guided
            target (used only when ``cond`` is given); None trains on the plain v.
        dispersive: ``L_disp(H) -> ()`` (e.g. ``functools.partial(dispersive_infonce_l2,
            tau=0.5)``); None disables the term.
        dispersive_weight: lambda (DM1: 0.5, or 0.1 in some configs).
        feature_modules: names of the submodules whose outputs are H (``model.named_modules()``
            names, e.g. ``("net.3",)`` for ``MLPField``); required with ``dispersive``.

    References:
        Mean Flows (Geng et al., 2025), arXiv:2505.13447, Alg. 1, Sec. 4.3 (adaptive loss).
        DM1 (Zou et al., 2025); Diffuse and Disperse (Wang & He, 2025), arXiv:2506.09027.

    Example:
        >>> from flowforge.models.mlp import MLPConfig, MLPField
        >>> net = MLPField(MLPConfig(dim=2, hidden=32, n_times=2))
        >>> loss = MeanFlowLoss()
        >>> loss(net, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        time_sampler: TimeSampler | None = None,
        flow_map_ratio: float = 0.25,
        p: float = 1.0,
        c: float = 0.01,
        time_inputs: TimeInputs = "start_gap",
        guidance: MeanFlowGuidance | None = None,
        dispersive: Callable[[Tensor], Tensor] | None = None,
        dispersive_weight: float = 0.5,
        feature_modules: Sequence[str] = (),
    ) -> None:
        if not 0.0 <= flow_map_ratio <= 1.0:
            raise ValueError(
                f"flow_map_ratio={flow_map_ratio!r} is a fraction of the batch; pass a value "
                "in [0, 1] (card: 0.25)."
            )
        if p < 0 or not c > 0:
            raise ValueError(f"p={p!r}, c={c!r}: need p >= 0 and c > 0 (card: p = 1, c = 0.01).")
        check_choice("time_inputs", time_inputs, ("start_gap", "start_end"))
        if isinstance(feature_modules, str):
            feature_modules = (feature_modules,)
        if dispersive is not None and not feature_modules:
            raise ValueError(
                "dispersive was given but feature_modules is empty; name the layer(s) whose "
                "outputs to disperse, e.g. feature_modules=('net.3',) for MLPField."
            )
        if dispersive is None and feature_modules:
            raise ValueError(
                f"feature_modules={tuple(feature_modules)!r} is only used with a dispersive "
                "loss; pass dispersive=... or drop feature_modules."
            )
        if dispersive_weight < 0:
            raise ValueError(f"dispersive_weight={dispersive_weight!r} must be >= 0 (DM1: 0.5).")
        self.time_sampler = LogitNormalTime(0.4, 1.0) if time_sampler is None else time_sampler
        self.flow_map_ratio = flow_map_ratio
        self.p, self.c = p, c
        self.time_inputs: TimeInputs = time_inputs
        self.guidance = guidance
        self.dispersive = dispersive
        self.dispersive_weight = dispersive_weight
        self.feature_modules = tuple(feature_modules)

    def sample_times(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """(t, r), each (n,): min and max of two draws; r = t for the first (1 - ratio) n."""
        a = self.time_sampler(n, generator=generator, device=device, dtype=dtype)
        b = self.time_sampler(n, generator=generator, device=device, dtype=dtype)
        t, r = torch.minimum(a, b), torch.maximum(a, b)
        n_fm = round((1 - self.flow_map_ratio) * n)
        r = torch.where(torch.arange(n, device=r.device) < n_fm, t, r)
        return t, r

    def __call__(
        self,
        model: TwoTimeNet,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        x_0: Tensor | None = None,
    ) -> Tensor:
        """Args: model an ``n_times=2`` network; x_1 (B, ...) data; cond (B,) labels or None;
        x_0 (B, ...) noise, default N(0, I).

        Returns: (B,) per-example losses.
        """
        B = x_1.shape[0]
        check_batch("cond", cond, B, ref="x_1")
        if x_0 is None:
            x_0 = randn_like_gen(x_1, generator)
        t, r = self.sample_times(B, generator, x_1.device, x_1.dtype)
        t_ = expand_like(t, x_1)  # (B, 1, ..., 1)
        x_t = t_ * x_1 + (1 - t_) * x_0
        v = x_1 - x_0
        if self.guidance is not None and cond is not None:
            cond, v = self._guide(model, x_t, t, v, cond, generator)

        names, inner = self.feature_modules, unwrap_ddp(model)

        def u_fn(x: Tensor, t: Tensor, r: Tensor) -> Tensor | tuple[Tensor, list[Tensor]]:
            if not names:
                return average_velocity(model, x, t, r, cond, self.time_inputs)
            with capture_features(inner, names) as feats:  # hooks on the inner network
                u = average_velocity(model, x, t, r, cond, self.time_inputs)
                missing = [n for n in names if n not in feats]
                if missing:
                    raise ValueError(
                        f"feature modules {missing} did not run in the forward pass; name "
                        "submodules that the model calls."
                    )
                return u, [feats[n] for n in names]

        if inner is model:
            out = meanflow_target(u_fn, x_t, t, r, v, has_aux=bool(names))
        else:  # DDP: the JVP runs on the inner network, u (with its gradient) on the wrapper

            def u_inner(x: Tensor, t: Tensor, r: Tensor) -> Tensor:
                return average_velocity(inner, x, t, r, cond, self.time_inputs)

            with torch.no_grad():
                _, u_tgt, dudt = meanflow_target(u_inner, x_t, t, r, v)
            u = u_fn(x_t, t, r)
            out = (u, u_tgt, dudt) if not names else (u[0], u_tgt, dudt, u[1])
        u, u_tgt = out[0], out[1]
        err = (u - u_tgt).square().flatten(1).sum(1)  # (B,), card: sum over dims
        loss = err / (err.detach() + self.c) ** self.p  # adaptive weighting, sg on the weight
        if self.dispersive is not None and self.dispersive_weight > 0:
            disp = sum(self.dispersive(h.reshape(B, -1)) for h in out[3])
            loss = loss + self.dispersive_weight * disp
        return loss

    def _guide(
        self,
        model: TwoTimeNet,
        x_t: Tensor,
        t: Tensor,
        v: Tensor,
        cond: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Class dropout, then the guided v~ inside the interval and v elsewhere / if dropped."""
        g = self.guidance
        assert g is not None, "guidance is required here"
        null_class = (
            g.null_class if g.null_class is not None else getattr(model, "null_class", None)
        )
        if null_class is None:
            raise ValueError(
                f"{type(model).__name__} has no null_class attribute; pass "
                "MeanFlowGuidance(null_class=K) with K the model's unconditional label."
            )
        dropped_cond = drop_condition(cond, g.class_dropout, null_class, generator)
        inside = (t >= g.t_interval[0]) & (t <= g.t_interval[1])  # (B,)
        omega = torch.where(inside, g.omega, 1.0)  # omega -> 1, kappa -> 0 outside
        kappa = torch.where(inside, g.kappa, 0.0)
        v_tilde = meanflow_guided_velocity(
            model, x_t, t, v, cond, null_class, omega, kappa, self.time_inputs
        )
        keep = expand_like(dropped_cond != null_class, v)  # dropped or null: unguided v
        return dropped_cond, torch.where(keep, v_tilde, v)


def meanflow_sample(
    model: TwoTimeNet,
    x_0: Tensor,
    n_steps: int = 1,
    cond: Tensor | None = None,
    time_grid: Tensor | None = None,
    time_inputs: TimeInputs = "start_gap",
) -> Tensor:
    """MeanFlow sampler: x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i) u_theta(x_{t_i}, t_i, t_{i+1}).

    One network call (1 NFE) per step; ``n_steps=1`` is the one-step map x_1 = x_0 +
    u(x_0, 0, 1) (card: x = z_1 - u(z_1, 0, 1)). State in float32 or wider; not wrapped in
    ``no_grad`` (wrap the call to sample cheaply).

    Args:
        model: the trained ``n_times=2`` network.
        x_0: (B, ...) noise at t = 0.
        n_steps: steps on the uniform grid 0 -> 1 (ignored when ``time_grid`` is given).
        cond: (B,) labels or None (no guidance at sampling time: it was trained in).
        time_grid: optional (N + 1,) increasing grid from 0 to 1.
        time_inputs: must match the training objective's.

    Returns:
        (B, ...) samples at t = 1.

    References:
        Mean Flows (Geng et al., 2025), arXiv:2505.13447, Alg. 2 and Eq. 12.

    Example:
        >>> model = lambda x, tt, c=None: 3.0 - x  # exact u for data at 3: (x* - x) / (1 - t)
        >>> meanflow_sample(model, torch.zeros(2, 1)).tolist()
        [[3.0], [3.0]]
    """
    if not isinstance(x_0, Tensor) or x_0.dim() == 0:
        raise ValueError("x_0 must be a (B, ...) tensor with a leading batch dimension.")
    check_batch("cond", cond, x_0.shape[0], ref="x_0")
    check_choice("time_inputs", time_inputs, ("start_gap", "start_end"))
    x = x_0.to(wider_float(x_0.dtype))  # never integrate in half precision
    if time_grid is None:
        if n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r} must be >= 1 (1 is the one-step sampler).")
        time_grid = torch.linspace(0, 1, n_steps + 1)
    time_grid = time_grid.to(device=x.device, dtype=x.dtype)
    if (
        time_grid.dim() != 1
        or len(time_grid) < 2
        or not bool((time_grid[1:] > time_grid[:-1]).all())
        or time_grid[0] < 0
        or time_grid[-1] > 1
    ):
        raise ValueError(
            f"time_grid={time_grid.tolist()} must be a strictly increasing 1-D grid within "
            "[0, 1], e.g. torch.linspace(0, 1, n_steps + 1)."
        )
    B = x.shape[0]
    for t_cur, t_next in zip(time_grid[:-1], time_grid[1:], strict=True):
        u = average_velocity(model, x, t_cur.expand(B), t_next.expand(B), cond, time_inputs)
        x = x + (t_next - t_cur) * u
    return x

"""TwinFlow: one-step generation with a self-adversarial twin flow in the same network (card 08).

One network ``G(x, (t, s), cond)`` with two times is trained on t in [-1, 1]. The positive half
(t >= 0) learns the real noise -> data flow: the instantaneous velocity at s = t and any-step jumps
t -> s (RCGM consistency). The negative half (-t, -t) learns the flow from noise to the network's
own one-step samples ``x_fake = x_0 + G(x_0, (0, 1))``. Their difference at one point,

    Delta_v(x_t, t) = G(x_t, (t, t)) - G(x_t, (-t, -t))
                    = (E_real[x_1 | x_t] - E_fake[x_1 | x_t]) / (1 - t),

(since E[x_1 - x_0 | x_t] = (E[x_1 | x_t] - x_t) / (1 - t) for x_t = t x_1 + (1 - t) x_0) points
from the fake posterior mean to the real one; the rectification loss moves the one-step samples
along it (like DMD, with both scores from the same network, no frozen teacher).

Card -> flowforge conventions (card: tau = 1 noise, tau = 0 data, x_tau = tau z + (1 - tau) x,
target v = z - x; here t = 0 noise x_0 = z, t = 1 data x_1 = x):

    tau = 1 - t          card target time tt <= tau  ->  our target time s = 1 - tt >= t
    v_card = z - x = -u, u = x_1 - x_0, so F_card = -G (our network predicts velocity to data)
    twin times (-tau, -tau)  ->  (-t, -t): the negative number whose |.| is our time
    x_hat = x_tau - |tau| F  ->  x_hat_1 = x_t + (1 - |t|) G      (data end)
    z_hat = x_tau + (1 - |tau|) F  ->  x_hat_0 = x_t - |t| G      (noise end)
    one-step jump F(z, 1, 0) -> G(x_0, (0, 1))
    Delta_v = F(-tau) - F(tau) = G(t) - G(-t)   (the same number in both conventions)
    L_rect = ||F - sg(F - Delta_v)||^2  ->  ||G - sg(G + Delta_v)||^2

The two branches meet at |t| = 0, which is the noise end here (the data end in the card, where
both fields equal -x); at the noise end the real and fake fields differ by the difference of the
data means, so the network must separate t = +eps from -eps. The sinusoidal features (scale 1000)
do this for |t| above about 1e-3; times are drawn from U(0, 1), so t = 0 is never used exactly.

References:
    TwinFlow: Realizing One-step Generation on Large Models with Self-adversarial Flows (Cheng,
    Sun, Li & Lin, 2025), arXiv:2512.05150 (code: inclusionAI/TwinFlow, MNIST tutorial).
    Any-step Generation via N-th Order Recursive Consistent Velocity Field Estimation (RCGM,
    Sun et al., 2025); Unified Continuous Generative Models (UCGM, Sun et al., 2025),
    arXiv:2505.07447 (sampler).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.distill.twinflow_sampling import (
    TwinNet,
    repeat_cond,
    twin_delta,
    twin_times,
)
from flowforge.losses.distances import mse
from flowforge.utils import check_batch, check_choice, expand_like, randn_like_gen

__all__ = ["TwinFlowLoss"]

Uncond = Literal["null", "shuffled"]


class TwinFlowLoss:
    """TwinFlow objective (card 08, MNIST-tutorial form), one value per example.

    With x_0 ~ N(0, I), x_1 the data, u = x_1 - x_0, t ~ U(0, 1), s = t + U(0, 1) (1 - t),
    x_t = t x_1 + (1 - t) x_0 and G(x, t, s) = model(x, (t, s), cond):

        L = w_base L_base + w_real L_real + w_adv L_adv + w_rect L_rect + w_cons L_cons
        L_base = ||G(x_t, t, s) - Gbar||^2, Gbar = sg(G) - clip(a G - b I - u, -1, 1)   (RCGM)
        L_real = ||G(x_t, t, t) - u||^2                                  (real velocity, FM)
        x_fake = x_0 + G(x_0, 0, 1)                                      (one-step jump)
        L_adv  = ||G(x^f_t, -t, -t) - (sg(x_fake) - n)||^2, x^f_t = t sg(x_fake) + (1 - t) n
        L_rect = ||G_fake - sg(G_fake + Delta_v(x'_t', t'))||^2, x'_t' = t' x_fake + (1 - t') n'
        L_cons = ||G_fake - Gbar(x_0, 0, 1)||^2                          (RCGM on the jump)

    RCGM target (card step 1, in our time): x' = x_t + delta u, t_m = min(t + delta, s); an
    N-step Euler integration of the target network's jumps G(x, t_c, t_n) from t_m to s gives
    I = sum (t_n - t_c) G; a = (s - t) / delta, b = 1 / delta (card: 100 (t - tt), 100). When
    s - t < delta, t_m = s and I = 0, and Delta reduces to G - u (card: a = 1, b = 1/(t - tt)
    multiplying a zero integral). ||.||^2 is the mean over features.

    Choices beside the tutorial: the adversarial term interpolates with fresh noise n (the
    official large-scale trainer does so; the tutorial reuses the generator's input, which
    teaches the negative branch the generator's coupled flow rather than the marginal fake flow
    that the Delta_v identity needs); the rectification uses fresh (n', t') as in both. The
    large-scale trainer's quarter split, tan time weighting and Barron loss are not included.

    Args:
        base_weight, real_weight, adv_weight, rect_weight, cons_weight: term weights (all 1 in
            the tutorial); a zero weight skips the term's forward passes. RCGM-only (the card's
            baseline) is ``TwinFlowLoss(real_weight=0, adv_weight=0, rect_weight=0,
            cons_weight=0)``.
        rcgm_order: N, Euler sub-steps of the RCGM target (card: 2).
        rcgm_delta: delta, the first-order step of the RCGM target (card: 0.01).
        rect_clip: clamp Delta_v to [-rect_clip, rect_clip], as the large-scale trainer does
            (1); None leaves it unclamped (tutorial). Unclamped, Delta_v ~ 1 / (1 - t') near the
            data end made the 2-D runs blow up early (1-NFE SWD 197 after 200 steps vs 3.3).
        ema_decay: a value in (0, 1) (card: 0.99) keeps an EMA shadow of the model in
            ``self.target`` as the RCGM / CFG target network, created on the first call and
            moved towards the model at every call with gradients enabled, its decay
            warm-started as in the reference code (d <- d + (1 - d)(ema_decay - d) / 2, from 0).
            That shadow is state of the objective and is not saved by ``train``'s checkpoints.
            0 uses the current network under no_grad (stateless), but RCGM-only training on
            2-D data then diverged (outputs ~1e5 after 600 Adam steps at lr 1e-3 or 2e-4,
            where 0.99 reached 1-NFE SWD 0.92).
        enhance_ratio: w of the CFG-enhanced target u <- u + w (G_tgt(x_t, t, t, c) -
            G_tgt(x_t, t, t, c_uncond)), applied to L_base and L_real when ``cond`` is given
            (card: 0.5 MNIST, 0.8 SD3.5); 0 disables it.
        enhance_uncond: the unconditional label: ``"null"`` (cond=None, the model's null
            class) or ``"shuffled"`` (a permutation of the batch labels, as in the tutorial).

    References:
        TwinFlow (Cheng et al., 2025), arXiv:2512.05150; code inclusionAI/TwinFlow.

    Example:
        >>> from flowforge.models.mlp import MLPConfig, MLPField
        >>> net = MLPField(MLPConfig(dim=2, hidden=32, n_times=2))
        >>> loss = TwinFlowLoss()
        >>> loss(net, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        base_weight: float = 1.0,
        real_weight: float = 1.0,
        adv_weight: float = 1.0,
        rect_weight: float = 1.0,
        cons_weight: float = 1.0,
        rcgm_order: int = 2,
        rcgm_delta: float = 0.01,
        rect_clip: float | None = 1.0,
        ema_decay: float = 0.99,
        enhance_ratio: float = 0.0,
        enhance_uncond: Uncond = "null",
    ) -> None:
        weights = dict(
            base_weight=base_weight,
            real_weight=real_weight,
            adv_weight=adv_weight,
            rect_weight=rect_weight,
            cons_weight=cons_weight,
        )
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"{name}={w!r} must be >= 0 (0 switches the term off).")
        if sum(weights.values()) == 0:
            raise ValueError("all term weights are 0; give at least one a positive weight.")
        if rcgm_order < 1:
            raise ValueError(f"rcgm_order={rcgm_order!r} must be >= 1 (the card uses 2).")
        if not 0 < rcgm_delta < 1:
            raise ValueError(f"rcgm_delta={rcgm_delta!r} must lie in (0, 1) (card: 0.01).")
        if rect_clip is not None and rect_clip <= 0:
            raise ValueError(f"rect_clip={rect_clip!r} must be > 0, or None for no clamp.")
        if not 0 <= ema_decay < 1:
            raise ValueError(
                f"ema_decay={ema_decay!r} must lie in [0, 1); 0 uses the current network as "
                "the target, 0.99 is the card's EMA."
            )
        if enhance_ratio < 0:
            raise ValueError(f"enhance_ratio={enhance_ratio!r} must be >= 0 (0 disables it).")
        check_choice("enhance_uncond", enhance_uncond, ("null", "shuffled"))
        self.base_weight, self.real_weight, self.adv_weight = base_weight, real_weight, adv_weight
        self.rect_weight, self.cons_weight = rect_weight, cons_weight
        self.rcgm_order, self.rcgm_delta, self.rect_clip = rcgm_order, rcgm_delta, rect_clip
        self.ema_decay, self.enhance_ratio, self.enhance_uncond = (
            ema_decay,
            enhance_ratio,
            enhance_uncond,
        )
        self.target: TwinNet | None = None
        self._decay_now = 0.0
        self._pending: dict | None = None  # a loaded target, applied once the model is seen

    def state_dict(self) -> dict:
        """The EMA target's weights and warm-up position, for checkpoints (``train`` saves it).

        Example:
            >>> TwinFlowLoss().state_dict()
            {'decay_now': 0.0, 'target': None}
        """
        target = None if self.target is None else dict(self.target.state_dict())
        return {"decay_now": self._decay_now, "target": target}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the target is rebuilt on the next call if not yet made)."""
        self._decay_now = float(state["decay_now"])
        if state["target"] is None:
            self.target, self._pending = None, None
        elif self.target is not None:
            self.target.load_state_dict(state["target"])
        else:
            self._pending = state["target"]

    # -- pieces -----------------------------------------------------------------------------
    @torch.no_grad()
    def rcgm_target(
        self,
        target_net: TwinNet,
        pred: Tensor,
        x_t: Tensor,
        u: Tensor,
        t: Tensor,
        s: Tensor,
        cond: Tensor | None = None,
    ) -> Tensor:
        """RCGM target Gbar = sg(pred) - clip(a pred - b I - u, -1, 1) (card step 1, our time).

        Args:
            target_net: the (EMA or current) network integrated for I.
            pred: (B, ...) the student's G(x_t, t, s).
            x_t: (B, ...); u: (B, ...) the (possibly CFG-enhanced) conditional velocity.
            t, s: (B,) start and target times, s >= t.
            cond: labels or None.

        Returns:
            (B, ...) the detached target.
        """
        d = self.rcgm_delta
        t_m = torch.minimum(t + d, s)  # card: max(t - 0.01, tt)
        x = x_t + d * u  # first-order step along the conditional velocity
        integral = torch.zeros_like(x_t)
        N = self.rcgm_order
        for i in range(N):
            t_c, t_n = t_m + (s - t_m) * (i / N), t_m + (s - t_m) * ((i + 1) / N)
            h = expand_like(t_n - t_c, x)
            g = target_net(x, twin_times(t_c, t_n), cond)
            x = x + h * g  # re-projection t_n x_hat_1 + (1 - t_n) x_hat_0 is this Euler step
            integral = integral + h * g
        near = (s - t) < d
        a = expand_like(torch.where(near, torch.ones_like(t), (s - t) / d), x_t)
        b = expand_like(torch.where(near, torch.zeros_like(t), torch.full_like(t, 1 / d)), x_t)
        delta = a * pred - b * integral - u
        return pred.detach() - delta.clamp(-1.0, 1.0)

    def adversarial(
        self,
        model: TwinNet,
        x_fake: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """L_adv: flow matching of the negative branch on detached fakes (card step 4).

        Args:
            model: the two-time network; x_fake: (B, ...) one-step samples (detached here).
            t: (B,) times in [0, 1]; cond: labels or None; generator: for the fresh noise.

        Returns:
            (B,) per-example losses.
        """
        x_f = x_fake.detach()
        n = randn_like_gen(x_f, generator)
        t_ = expand_like(t, x_f)
        x_t = t_ * x_f + (1 - t_) * n
        return mse(model(x_t, twin_times(-t, -t), cond), x_f - n)

    def rectify(
        self,
        model: TwinNet,
        pred_fake: Tensor,
        x_fake: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """L_rect = ||G_fake - sg(G_fake + Delta_v)||^2 at fresh (n', t') (card step 5).

        Its gradient with respect to G_fake is -2 Delta_v / D, so a descent step moves the
        one-step sample x_fake = x_0 + G_fake by +eta Delta_v, toward the real posterior mean.

        Args:
            model: the two-time network; pred_fake: (B, ...) G(x_0, 0, 1) with gradient.
            x_fake: (B, ...) the one-step samples (only read under no_grad).
            cond: labels or None; generator: for (n', t').

        Returns:
            (B,) per-example losses.
        """
        B = x_fake.shape[0]
        with torch.no_grad():
            x_f = x_fake.detach()
            t = torch.rand(B, generator=generator, device=x_f.device, dtype=x_f.dtype)
            n = randn_like_gen(x_f, generator)
            t_ = expand_like(t, x_f)
            delta_v = twin_delta(model, t_ * x_f + (1 - t_) * n, t, cond)
            if self.rect_clip is not None:
                delta_v = delta_v.clamp(-self.rect_clip, self.rect_clip)
        return mse(pred_fake, (pred_fake + delta_v).detach())

    # -- the objective ----------------------------------------------------------------------
    def _target_net(self, model: TwinNet) -> TwinNet:
        """The RCGM / CFG target: the model itself, or its EMA shadow (updated when training)."""
        if self.ema_decay == 0:
            return model
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ema_decay={self.ema_decay} needs an nn.Module to copy, got "
                f"{type(model).__name__}; pass ema_decay=0 for a plain callable."
            )
        if self.target is None:
            self.target = copy.deepcopy(model).requires_grad_(False)
            if self._pending is not None:
                self.target.load_state_dict(self._pending)
                self._pending = None
        if torch.is_grad_enabled():
            with torch.no_grad():
                d = self._decay_now  # reference warm-up: 0, 0.495, 0.62, ... -> ema_decay
                for p_t, p in zip(self.target.parameters(), model.parameters(), strict=True):
                    p_t.lerp_(p.detach(), 1 - d)
                for b_t, b in zip(self.target.buffers(), model.buffers(), strict=True):
                    b_t.copy_(b)
            self._decay_now += (1 - self._decay_now) * (self.ema_decay - self._decay_now) * 0.5
        return self.target

    def terms(
        self,
        model: TwinNet,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The unweighted per-example terms with a positive weight, each (B,).

        Keys among ``"base"``, ``"real"``, ``"adv"``, ``"rect"``, ``"cons"``.
        """
        B = x_1.shape[0]
        check_batch("cond", cond, B, ref="x_1")
        dev, dt = x_1.device, x_1.dtype
        x_0 = randn_like_gen(x_1, generator)
        t = torch.rand(B, generator=generator, device=dev, dtype=dt)
        s = t + torch.rand(B, generator=generator, device=dev, dtype=dt) * (1 - t)
        t_ = expand_like(t, x_1)
        x_t = t_ * x_1 + (1 - t_) * x_0
        u = x_1 - x_0
        tgt = self._target_net(model)
        if self.enhance_ratio > 0 and cond is not None:
            with torch.no_grad():  # card: v <- v + w (F(c) - F(uncond)) at tt = t
                if self.enhance_uncond == "null":
                    uncond = None
                else:
                    where = cond.device if generator is None else generator.device
                    perm = torch.randperm(B, generator=generator, device=where)
                    uncond = cond[perm.to(cond.device)]
                g_c = tgt(x_t, twin_times(t, t), cond)
                g_u = tgt(x_t, twin_times(t, t), uncond)
                u = u + self.enhance_ratio * (g_c - g_u)
        # The student's three predictions depend on nothing the others compute, so they run as
        # one forward pass over a concatenated batch (same values, a third of the calls).
        zero, one = torch.zeros_like(t), torch.ones_like(t)
        fake = self.adv_weight + self.rect_weight + self.cons_weight > 0
        calls = {
            "base": (self.base_weight > 0, x_t, t, s),  # jump t -> s (RCGM)
            "real": (self.real_weight > 0, x_t, t, t),  # instantaneous velocity
            "fake": (fake, x_0, zero, one),  # one-step jump 0 -> 1
        }
        names = [k for k, c in calls.items() if c[0]]
        x_in = torch.cat([calls[k][1] for k in names])
        times = torch.cat([twin_times(calls[k][2], calls[k][3]) for k in names])
        pred_all = model(x_in, times, repeat_cond(cond, len(names)))  # (len(names) B, ...)
        preds = dict(zip(names, pred_all.split(B), strict=True))
        out: dict[str, Tensor] = {}
        rcgm = [k for k in ("base", "fake") if k in preds]
        rcgm = [k for k in rcgm if k == "base" or self.cons_weight > 0]
        if rcgm:  # RCGM targets of L_base and L_cons, also in one batch
            args = {"base": (x_t, u, t, s), "fake": (x_0, x_1 - x_0, zero, one)}
            target = self.rcgm_target(
                tgt,
                torch.cat([preds[k] for k in rcgm]),
                *(torch.cat([args[k][i] for k in rcgm]) for i in range(4)),
                repeat_cond(cond, len(rcgm)),
            ).split(B)
            targets = dict(zip(rcgm, target, strict=True))
            if "base" in targets:
                out["base"] = mse(preds["base"], targets["base"])
        if "real" in preds:
            out["real"] = mse(preds["real"], u)
        if fake:
            pred_fake = preds["fake"]
            x_fake = x_0 + pred_fake  # x_hat_1 at t = 0
            if self.adv_weight > 0:
                out["adv"] = self.adversarial(model, x_fake, t, cond, generator)
            if self.rect_weight > 0:
                out["rect"] = self.rectify(model, pred_fake, x_fake, cond, generator)
            if self.cons_weight > 0:
                out["cons"] = mse(pred_fake, targets["fake"])
        return out

    def __call__(
        self,
        model: TwinNet,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: x_1 (B, ...) data; cond (B,) labels or None. Returns: (B,) weighted loss."""
        w = {
            "base": self.base_weight,
            "real": self.real_weight,
            "adv": self.adv_weight,
            "rect": self.rect_weight,
            "cons": self.cons_weight,
        }
        return sum(w[k] * v for k, v in self.terms(model, x_1, cond, generator).items())

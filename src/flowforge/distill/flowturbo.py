"""FlowTurbo: a velocity refiner and a pseudo corrector accelerate a pretrained flow (card 09).

Sampling runs on the uniform grid t_i = i / K, K = N_H + N_P + N_R, h = 1 / K, noise (t = 0)
to data (t = 1), with three step types in this fixed order:

    H (Heun, 2 predictor NFE):  d_i = v(x_i, t_i);  x~ = x_i + h d_i;  d' = v(x~, t_{i+1});
                                x_{i+1} = x_i + h (d_i + d') / 2
    P (pseudo corrector, 1):    the same with d_i = d' of the previous step (the velocity at the
                                previous *predicted* point x~, not at x_{i+1})
    R (refiner, 0 predictor):   d_i = r(x_i, t_i, v_prev) + v_prev;  x~ = x_i + h d_i;
                                d' = r(x~, t_{i+1}, d_i) + d_i;  x_{i+1} = x_i + h (d_i + d') / 2;
                                v_prev <- d_i

The refiner r_phi is a small network predicting the *change* of velocity, trained against the
frozen predictor (``RefinerLoss``): x_+ = x_t + Delta v(x_t, t), target v(x_+, t + Delta),
prediction r(x_+, t + Delta, v(x_t, t)) + v(x_t, t). The card's convention (SiT: t = 0 noise,
t = 1 data) is flowforge's, so its symbols map one to one. The card's third ingredient,
sample-aware compilation, is ``torch.compile`` of the fixed chain: identical numerics, not
reimplemented here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from flowforge.losses.time_samplers import UniformTime
from flowforge.models.layers import ACTIVATIONS, Activation, SinusoidalEmbedding, make_activation
from flowforge.paths.affine import CondOTPath
from flowforge.paths.base import ProbPath
from flowforge.protocols import Field, TimeSampler
from flowforge.utils.checks import check_batch, check_choice
from flowforge.utils.tensor import randn_like_gen, wider_float

__all__ = [
    "ConcatRefiner",
    "FlowTurboNFE",
    "MLPRefiner",
    "MLPRefinerConfig",
    "Refiner",
    "RefinerLoss",
    "flowturbo_nfe",
    "flowturbo_sample",
    "parse_schedule",
    "pseudo_corrector_step",
    "refiner_step",
]

_REFERENCE = (
    "FlowTurbo: Towards Real-time Flow-Based Image Generation with Velocity Refiner "
    "(Zhao, Shi, Yu, Zhou, Lu, NeurIPS 2024), arXiv:2409.18128."
)


@runtime_checkable
class Refiner(Protocol):
    """A velocity refiner ``refiner(x, t, v, cond=None) -> Tensor``: the predicted change
    v(x, t) - v of the predictor's velocity, shape of ``x``; ``t`` is (B,), ``v`` the last
    (guided, under CFG) velocity, shape of ``x``."""

    def __call__(self, x: Tensor, t: Tensor, v: Tensor, cond: Tensor | None = None) -> Tensor: ...


@dataclass
class MLPRefinerConfig:
    """Hyperparameters of ``MLPRefiner``.

    Args:
        dim: number of features D of one example (``x[0].numel()``).
        hidden: width of each hidden layer (card check 2: 64).
        depth: number of hidden layers (card check 2: 1).
        time_embed_dim: sinusoidal time features; 0 feeds the raw t as one extra input.
        num_classes: K labels for class conditioning (label K is the null class); 0 for none.
        class_embed_dim: width of the learned class embedding (used only when num_classes > 0).
        activation: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Example:
        >>> cfg = MLPRefinerConfig(dim=2)
        >>> sum(p.numel() for p in MLPRefiner(cfg).parameters())  # (2+2+64+1)64 + (64+1)2
        4546
    """

    dim: int = 2
    hidden: int = 64
    depth: int = 1
    time_embed_dim: int = 64
    num_classes: int = 0
    class_embed_dim: int = 32
    activation: Activation = "silu"


class MLPRefiner(nn.Module):
    """A small MLP velocity refiner for vectors: r(x, t, v, y) = MLP([x, v, e(t), c(y)]).

    The output layer is zero-initialised, so an untrained refiner predicts no change (r = 0:
    "reuse the last velocity") and training starts from that baseline.

    Args:
        config: the ``MLPRefinerConfig``.

    References:
        FlowTurbo (Zhao et al., 2024), arXiv:2409.18128, Sec. 3.2 (velocity refiner).

    Example:
        >>> r = MLPRefiner(MLPRefinerConfig(dim=2, num_classes=3))
        >>> x, v = torch.randn(4, 2), torch.randn(4, 2)
        >>> r(x, torch.rand(4), v, torch.tensor([0, 1, 2, 3])).abs().max().item()  # zero init
        0.0
    """

    def __init__(self, config: MLPRefinerConfig) -> None:
        super().__init__()
        c = config
        for name in ("dim", "hidden", "depth"):
            if getattr(c, name) < 1:
                raise ValueError(f"MLPRefinerConfig.{name}={getattr(c, name)!r} must be >= 1.")
        if c.time_embed_dim < 0:
            raise ValueError(
                f"MLPRefinerConfig.time_embed_dim={c.time_embed_dim!r} must be >= 0 (0 feeds "
                "the raw t)."
            )
        if c.num_classes < 0 or (c.num_classes > 0 and c.class_embed_dim < 1):
            raise ValueError(
                f"MLPRefinerConfig.num_classes={c.num_classes!r}, class_embed_dim="
                f"{c.class_embed_dim!r}; pass num_classes >= 0 and, when it is > 0, "
                "class_embed_dim >= 1."
            )
        check_choice("MLPRefinerConfig.activation", c.activation, ACTIVATIONS)
        self.config = c
        self.time_embed = SinusoidalEmbedding(c.time_embed_dim) if c.time_embed_dim > 0 else None
        self.class_embed = (
            nn.Embedding(c.num_classes + 1, c.class_embed_dim) if c.num_classes > 0 else None
        )
        n_in = (
            2 * c.dim + (c.time_embed_dim or 1) + (c.class_embed_dim if c.num_classes > 0 else 0)
        )
        layers: list[nn.Module] = [nn.Linear(n_in, c.hidden), make_activation(c.activation)]
        for _ in range(c.depth - 1):
            layers += [nn.Linear(c.hidden, c.hidden), make_activation(c.activation)]
        out = nn.Linear(c.hidden, c.dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, v: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x, v: (B, ...) with D features; t: (B,); cond: (B,) labels in [0, K] or None.

        Returns: (B, ...) the predicted velocity change, the shape of x.
        """
        c = self.config
        B = x.shape[0]
        if x.dim() < 2 or x[0].numel() != c.dim or v.shape != x.shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} and v {tuple(v.shape)}; pass two (B, ...) "
                f"tensors of the same shape with MLPRefinerConfig.dim={c.dim} features each."
            )
        t = t.to(x.dtype)
        t_in = t[:, None] if self.time_embed is None else self.time_embed(t)  # (B, E_t)
        h = [x.reshape(B, c.dim), v.reshape(B, c.dim), t_in]
        if self.class_embed is not None:
            labels = torch.full((B,), c.num_classes, device=x.device) if cond is None else cond
            h.append(self.class_embed(labels.long()).to(x.dtype))  # (B, E_c)
        elif cond is not None:
            raise ValueError(
                "cond was given but the refiner is unconditional (MLPRefinerConfig."
                "num_classes=0); pass cond=None or build it with num_classes > 0."
            )
        return self.net(torch.cat(h, dim=-1)).reshape(x.shape)


class ConcatRefiner(nn.Module):
    """Turn a field network into a refiner: r(x, t, v, cond) = net(concat(x, v), t, cond).

    x and v are concatenated along dim 1 (channels for images, the card's "input channels
    doubled"), so ``net`` takes 2C input channels and returns C, e.g.
    ``UNetField(UNetConfig(in_channels=2 * C, out_channels=C))`` (zero-initialised output, so the
    refiner starts at r = 0) or a one-block ``DiTField`` like the official refiner.

    Args:
        net: any ``net(h, t, cond) -> Tensor`` with h = (B, 2C, ...) and output (B, C, ...).

    Example:
        >>> from flowforge.models.unet import UNetConfig, UNetField
        >>> net = UNetField(UNetConfig(in_channels=2, out_channels=1, base_channels=8))
        >>> x, v = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
        >>> ConcatRefiner(net)(x, torch.rand(2), v).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, v: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x, v: (B, C, ...); t: (B,); cond: passed to ``net``. Returns: (B, C, ...)."""
        if v.shape != x.shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but v has {tuple(v.shape)}; the refiner needs "
                "the velocity at the same shape as x."
            )
        return self.net(torch.cat([x, v], dim=1), t, cond)


class RefinerLoss:
    """Train a velocity refiner on the change of a frozen predictor's velocity (card 09).

        x_t  = path(x_0, x_1, t),  Delta ~ U(0, max_delta) (one per batch),  t = u (1 - Delta)
        v_t  = v(x_t, t),  x_+ = x_t + Delta v_t,  target = v(x_+, t + Delta)   (no grad)
        L    = mean_features || r(x_+, t + Delta, v_t) + v_t - target ||^2          (B,)

    i.e. the refiner regresses the predictor's velocity change v(x_+, t + Delta) - v_t between
    two points one Euler step of size Delta apart, conditioned on the velocity v_t that made the
    step (the same conditioning as the second refiner call of ``refiner_step``). The official code
    draws t ~ U(0, 1) and lets t + Delta exceed 1 (the predictor then extrapolates); here
    u ~ ``time_sampler`` is scaled by 1 - Delta so every query stays in [0, 1], where the sampler
    uses the refiner. For classifier-free guidance wrap the loss in
    ``flowforge.guidance.dropout.ConditionDropout`` (the card's label dropout 0.1): dropped labels
    reach both predictor and refiner, so the null class learns the unconditional change.

    Args:
        predictor: the frozen pretrained velocity ``v(x, t, cond)``; called under ``no_grad``.
        max_delta: the largest step Delta (card: 0.12); cover the sampler's 1 / K.
        path: the predictor's probability path (default: the straight line, as SiT's).
        time_sampler: the distribution of u (default U(0, 1), card).

    References:
        FlowTurbo (Zhao et al., 2024), arXiv:2409.18128, Sec. 3.2; official ``transport.py``.

    Example:
        >>> predictor = lambda x, t, cond=None: -x
        >>> exact = lambda x, t, v, cond=None: -x - v  # v(x_+) - v_t for a t-free linear field
        >>> loss = RefinerLoss(predictor)
        >>> loss(exact, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).abs().max()
        tensor(0.)
    """

    def __init__(
        self,
        predictor: Field,
        max_delta: float = 0.12,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
    ) -> None:
        if not 0.0 < max_delta < 1.0:
            raise ValueError(
                f"max_delta={max_delta!r} must lie in (0, 1); the card uses 0.12, and it should "
                "cover the sampler's step 1 / K."
            )
        self.predictor = predictor
        self.max_delta = max_delta
        self.path = CondOTPath() if path is None else path
        self.time_sampler = UniformTime() if time_sampler is None else time_sampler

    def __call__(
        self,
        model: Refiner,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: the refiner; x_1: (B, ...) data; cond: optional (B, ...) condition;
        generator: random source. Returns: (B,) per-example losses."""
        B = x_1.shape[0]
        check_batch("cond", cond, B, ref="x_1")
        x_0 = randn_like_gen(x_1, generator)
        delta = self.max_delta * torch.rand((), generator=generator, device=x_1.device).to(
            x_1.dtype
        )  # one Delta per batch, as the official code
        u = self.time_sampler(B, generator=generator, device=x_1.device, dtype=x_1.dtype)
        t = u * (1 - delta)  # (B,) so that t + Delta <= 1
        x_t = self.path.sample(x_0, x_1, t).x_t
        with torch.no_grad():
            v_t = self.predictor(x_t, t, cond)
            x_plus = x_t + delta * v_t  # one Euler step of size Delta
            target = self.predictor(x_plus, t + delta, cond)
        pred = model(x_plus, t + delta, v_t, cond) + v_t  # residual prediction
        return (pred - target).square().flatten(1).mean(1)  # (B,)


def pseudo_corrector_step(
    predictor: Field,
    x: Tensor,
    t: Tensor,
    t_next: Tensor,
    d: Tensor | None = None,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One pseudo-corrector (P) step; with ``d=None`` it is a plain Heun (H) step.

        d_i = d (cache) or v(x_i, t_i);  x~ = x_i + h d_i;  d' = v(x~, t_{i+1});
        x_{i+1} = x_i + h (d_i + d') / 2,   h = t_{i+1} - t_i

    Returns d' as the next step's cache: the velocity at the *predicted* point x~, not at
    x_{i+1}. It differs from v(x_{i+1}) by O(h^2) (x~ - x_{i+1} = h (d_i - d') / 2), so chained P
    steps stay second order at 1 predictor NFE each (2 with ``d=None``).

    Args:
        predictor: the velocity ``v(x, t, cond)``.
        x: (B, ...) the state x_i.
        t, t_next: 0-dim times t_i, t_{i+1}.
        d: (B, ...) the cached velocity, or None to evaluate v(x_i, t_i).
        cond: optional (B, ...) condition passed to the predictor.

    Returns:
        (x_{i+1}, d'), both (B, ...).

    References:
        FlowTurbo (Zhao et al., 2024), arXiv:2409.18128, Sec. 3.3 (pseudo corrector).

    Example:
        >>> decay = lambda x, t, cond=None: -x
        >>> x, d = pseudo_corrector_step(decay, torch.ones(1, 1), torch.tensor(0.0),
        ...                              torch.tensor(1.0))
        >>> x.item(), d.item()  # Heun: 1 + (-1 + 0) / 2; d' = v(x~ = 0)
        (0.5, -0.0)
    """
    B, h = x.shape[0], t_next - t
    d_i = predictor(x, t.expand(B), cond) if d is None else d
    x_pred = x + h * d_i  # Euler predictor x~
    d_next = predictor(x_pred, t_next.expand(B), cond)
    return x + h * 0.5 * (d_i + d_next), d_next  # trapezoidal corrector


def refiner_step(
    refiner: Refiner,
    x: Tensor,
    t: Tensor,
    t_next: Tensor,
    v_prev: Tensor,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One refiner (R) step: a Heun step whose two velocities come from the refiner.

        d_i = r(x_i, t_i, v_prev) + v_prev;  x~ = x_i + h d_i;  d' = r(x~, t_{i+1}, d_i) + d_i;
        x_{i+1} = x_i + h (d_i + d') / 2

    The second call is conditioned on d_i, the velocity that made the step to x~, exactly as in
    training (``RefinerLoss``: x_+ = x_t + Delta v_t, conditioned on v_t); the card's pseudocode
    does this (the official assembled sampler conditions it on v_prev instead). 2 refiner NFE,
    no predictor call.

    Args:
        refiner: the refiner ``r(x, t, v, cond)``.
        x: (B, ...) the state x_i.
        t, t_next: 0-dim times t_i, t_{i+1}.
        v_prev: (B, ...) the last velocity (the P/H cache, or d_i of the previous R step).
        cond: optional (B, ...) condition passed to the refiner.

    Returns:
        (x_{i+1}, d_i): the new state and the next step's v_prev.

    References:
        FlowTurbo (Zhao et al., 2024), arXiv:2409.18128, Sec. 3.2.

    Example:
        >>> r = lambda x, t, v, cond=None: -x - v  # exact for dx/dt = -x: r + v = -x
        >>> x, d = refiner_step(r, torch.ones(1, 1), torch.tensor(0.0), torch.tensor(1.0),
        ...                     torch.zeros(1, 1))
        >>> x.item(), d.item()  # the Heun step of dx/dt = -x
        (0.5, -1.0)
    """
    B, h = x.shape[0], t_next - t
    d_i = refiner(x, t.expand(B), v_prev, cond) + v_prev
    x_pred = x + h * d_i
    d_next = refiner(x_pred, t_next.expand(B), d_i, cond) + d_i
    return x + h * 0.5 * (d_i + d_next), d_i


_SCHEDULE = re.compile(r"H(\d+)P(\d+)R(\d+)")


def parse_schedule(schedule: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``"H2P6R4"`` or ``(2, 6, 4)`` -> (n_heun, n_pseudo, n_refine), validated.

    Example:
        >>> parse_schedule("H1P5R3")
        (1, 5, 3)
    """
    if isinstance(schedule, str):
        match = _SCHEDULE.fullmatch(schedule.strip().upper())
        if match is None:
            raise ValueError(
                f"schedule={schedule!r} is not of the form 'H<a>P<b>R<c>'; pass e.g. 'H2P6R4' "
                "or a tuple (n_heun, n_pseudo, n_refine)."
            )
        counts = tuple(int(g) for g in match.groups())
    else:
        counts = tuple(schedule)
        if len(counts) != 3 or not all(isinstance(n, int) and n >= 0 for n in counts):
            raise ValueError(
                f"schedule={schedule!r}; pass three non-negative ints (n_heun, n_pseudo, "
                "n_refine) or a string like 'H2P6R4'."
            )
    if sum(counts) == 0:
        raise ValueError(f"schedule={schedule!r} has no steps; pass at least one step.")
    return counts  # type: ignore[return-value]


class FlowTurboNFE(NamedTuple):
    """Function evaluations of one ``flowturbo_sample`` call, per network."""

    predictor: int
    refiner: int


def flowturbo_nfe(schedule: str | tuple[int, int, int]) -> FlowTurboNFE:
    """NFE of the assembled sampler for a schedule H_a P_b R_c.

        predictor = 2a + b          (a > 0: the last H step hands d' to the first P step)
                  = b + 1           (a = 0, b > 0: the first P step has no cache)
                  = 1               (a = b = 0: one call gives the refiner its first v_prev)
        refiner   = 2c

    Example:
        >>> flowturbo_nfe("H2P6R4")  # card check 3: 10 predictor NFE
        FlowTurboNFE(predictor=10, refiner=8)
        >>> flowturbo_nfe("H1P5R3")  # the official sample config
        FlowTurboNFE(predictor=7, refiner=6)
    """
    a, b, c = parse_schedule(schedule)
    predictor = 2 * a + b if a > 0 else b + 1
    return FlowTurboNFE(predictor=predictor, refiner=2 * c)


def flowturbo_sample(
    predictor: Field,
    refiner: Refiner | None,
    x_0: Tensor,
    schedule: str | tuple[int, int, int] = "H2P6R4",
    cond: Tensor | None = None,
) -> Tensor:
    """FlowTurbo's assembled sampler: H_a Heun, then P_b pseudo-corrector, then R_c refiner steps.

    Uniform grid t_i = i / K, K = a + b + c, from noise (t = 0) to data (t = 1); Heun steps near
    noise, refiner steps near data where the velocity is stable (module docstring). The velocity
    cache passes from each H/P step to the next P step and to the first R step, so the cost is
    ``flowturbo_nfe(schedule)``: 2a + b predictor NFE for a > 0 (b + 1 for a = 0) and 2c refiner
    NFE. Under classifier-free guidance pass a guided predictor (and a guided refiner): the
    refiner then receives the guided velocity, as the card requires. Differentiable (no
    ``no_grad`` inside); the state is kept in float32 or wider.

    Args:
        predictor: the pretrained velocity ``v(x, t, cond)``.
        refiner: the refiner ``r(x, t, v, cond)`` (``MLPRefiner``, ``ConcatRefiner``); may be
            None only when the schedule has no R step.
        x_0: (B, ...) noise at t = 0.
        schedule: ``"H<a>P<b>R<c>"`` or (n_heun, n_pseudo, n_refine); card: H2P6R4 (K = 12),
            official images: H1P5R3.
        cond: optional (B, ...) condition passed to predictor and refiner.

    Returns:
        (B, ...) samples at t = 1.

    References:
        FlowTurbo (Zhao et al., 2024), arXiv:2409.18128, Alg. 1; official ``models_assemble.py``.

    Example:
        >>> decay = lambda x, t, cond=None: -x
        >>> exact = lambda x, t, v, cond=None: -x - v
        >>> x = flowturbo_sample(decay, exact, torch.ones(1, 1), "H2P6R4")
        >>> round(x.item(), 2)  # exp(-1) = 0.368
        0.37
    """
    n_heun, n_pseudo, n_refine = parse_schedule(schedule)
    if n_refine > 0 and refiner is None:
        raise ValueError(
            f"schedule={schedule!r} has {n_refine} refiner steps but refiner=None; pass a "
            "refiner or a schedule with R0."
        )
    if not isinstance(x_0, Tensor) or x_0.dim() == 0:
        raise ValueError("x_0 must be a (B, ...) tensor with a leading batch dimension.")
    check_batch("cond", cond, x_0.shape[0], ref="x_0")
    x = x_0.to(wider_float(x_0.dtype))  # never integrate in half precision
    K = n_heun + n_pseudo + n_refine
    t = torch.linspace(0, 1, K + 1, dtype=x.dtype, device=x.device)  # t_i = i / K
    d = None  # velocity cache: d' of the last H/P step
    i = 0
    for _ in range(n_heun):
        x, d = pseudo_corrector_step(predictor, x, t[i], t[i + 1], None, cond)
        i += 1
    for _ in range(n_pseudo):
        x, d = pseudo_corrector_step(predictor, x, t[i], t[i + 1], d, cond)
        i += 1
    if n_refine > 0:
        v_prev = predictor(x, t[i].expand(x.shape[0]), cond) if d is None else d
        for _ in range(n_refine):
            x, v_prev = refiner_step(refiner, x, t[i], t[i + 1], v_prev, cond)
            i += 1
    assert i == K, "every grid interval is stepped exactly once"
    return x

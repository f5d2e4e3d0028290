"""Blockwise flow matching (BFM): one small velocity network per time segment.

[0, 1] is cut into M segments by tau_k = k / M. Segment k holds the half-open interval
[tau_k, tau_{k+1}) (the last one also holds t = 1) and its own velocity net V_k. An optional shared
guidance net G gives features h = G(x_t, t, y) that condition every V_k (the card's semantic
feature guidance), and a light feature residual network (FRN) can stand in for G inside a segment:

    v(x_t, t, y)  = V_k(x_t, t, y; h),  k = k(t),  h = G(x_t, t, y)                  (routing)
    L_FM          = || V_k(x_t, t, y; h) - (x_1 - x_0) ||^2,  t ~ U[tau_k, tau_{k+1})  (even split)
    L_align       = 1 - cos(P(h), T(x_1))                       (REPA-style, T a fixed target net)
    h_hat(x_t, t) = sg(G(x_{t_s}, t_s, y)) + c(t) FRN(x_t, t, y),  t_s = tau_k,
    c(t)          = (t - tau_k) / (tau_{k+1} - tau_k)
    L_FRN         = || h_hat - sg(G(x_t, t, y)) ||^2

with x_{t_s} and x_t built from the same (x_0, x_1) pair.

Card -> flowforge (card 10 runs t_card = 1 noise -> 0 data): t = 1 - t_card, x_0 = eps, x_1 = x,
card target eps - x becomes x_1 - x_0 (d/dt = -d/dt_card). The card's boundaries
sigma_k = linspace(1, 0, M+1) become tau_k = 1 - sigma_k = linspace(0, 1, M+1) with the same k
(k = 0 is the noisiest segment in both); the card's segment start t_s = sigma_k is our tau_k, its
end sigma_{k+1} our tau_{k+1}, and its coefficient (t_s - t) / (t_s - sigma_{k+1}) is our c(t)
(0 at the segment start, 1 at its end). Every sampler step starts at a time in [tau_k, tau_{k+1}),
so training and sampling use the same half-open intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.losses.distances import mse
from flowforge.models.layers import (
    ImageCond,
)
from flowforge.paths.affine import AffinePath, CondOTPath
from flowforge.utils import check_batch, randn_like_gen, wider_float

__all__ = [
    "BlockwiseField",
    "BlockwiseLoss",
    "FeatureResidualLoss",
    "blockwise_sample",
    "segment_boundaries",
    "segment_index",
    "segment_times",
    "split_sizes",
]


def segment_boundaries(
    num_segments: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """The M + 1 segment boundaries tau_k = k / M (card: sigma_k = 1 - tau_k).

    Example:
        >>> segment_boundaries(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if num_segments < 1:
        raise ValueError(f"num_segments={num_segments!r} must be >= 1 (the card uses M = 6).")
    return torch.linspace(0, 1, num_segments + 1, device=device, dtype=dtype)


def segment_index(t: Tensor, num_segments: int) -> Tensor:
    """The segment k(t) with tau_k <= t < tau_{k+1}; t = 1 belongs to the last segment.

    Args:
        t: (B,) times in [0, 1].
        num_segments: M.

    Returns:
        (B,) long segment indices in [0, M).

    Example:
        >>> segment_index(torch.tensor([0.0, 0.25, 0.2499, 1.0]), 4).tolist()
        [0, 1, 0, 3]
    """
    tau = segment_boundaries(num_segments, t.device, t.dtype if t.is_floating_point() else None)
    return torch.bucketize(t.contiguous(), tau[1:-1], right=True)  # tau[i-1] <= t < tau[i] -> i


def split_sizes(batch: int, num_segments: int) -> list[int]:
    """Examples per segment when a batch is split evenly (the first B mod M get one more).

    Example:
        >>> split_sizes(10, 4)
        [3, 3, 2, 2]
    """
    if batch < num_segments:
        raise ValueError(
            f"batch={batch} is smaller than num_segments={num_segments}, so some segment net "
            f"would get no example this step (card 10 pitfall); use a batch of at least "
            f"{num_segments}."
        )
    return [batch // num_segments + (k < batch % num_segments) for k in range(num_segments)]


def segment_times(
    batch: int,
    num_segments: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Training times with the batch split evenly across segments, t ~ U[tau_k, tau_{k+1}).

    Segment k gets ``split_sizes(batch, M)[k]`` examples at randomly permuted batch positions
    (so a batch ordered by class does not tie classes to segments).

    Args:
        batch: B >= M.
        num_segments: M.
        generator: random source.
        device, dtype: of t.

    Returns:
        t (B,) and its segments k (B,) long, with tau_k <= t < tau_{k+1} exactly.

    Example:
        >>> t, k = segment_times(8, 4, torch.Generator().manual_seed(0))
        >>> torch.bincount(k).tolist(), bool((segment_index(t, 4) == k).all())
        ([2, 2, 2, 2], True)
    """
    sizes = torch.tensor(split_sizes(batch, num_segments), device=device)
    k = torch.repeat_interleave(torch.arange(num_segments, device=device), sizes)  # (B,)
    k = k[torch.randperm(batch, generator=generator, device=device)]
    tau = segment_boundaries(num_segments, device, dtype)
    start, end = tau[k], tau[k + 1]
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
    t = start + u * (end - start)
    return torch.minimum(t, torch.nextafter(end, start)), k  # rounding never reaches tau_{k+1}


def _coefficient(t: Tensor, k: Tensor | int, num_segments: int) -> Tensor:
    """c(t) = (t - tau_k) / (tau_{k+1} - tau_k): 0 at the segment start, 1 at its end."""
    tau = segment_boundaries(num_segments, t.device, t.dtype)
    return (t - tau[k]) / (tau[1] - tau[0])


def _take(cond: Tensor | ImageCond | None, idx: Tensor) -> Tensor | ImageCond | None:
    """The examples ``idx`` of a condition (None, a (B, ...) tensor or an ImageCond)."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[idx]
    if isinstance(cond, ImageCond):
        labels = None if cond.labels is None else cond.labels[idx]
        channels = None if cond.channels is None else cond.channels[idx]
        return ImageCond(labels=labels, channels=channels)
    raise TypeError(
        f"cond has type {type(cond).__name__}; pass None, a (B, ...) tensor or an ImageCond."
    )


class BlockwiseField(nn.Module):
    """M segment velocity nets behind one field ``model(x, t, cond)``, routed by each t.

    v(x, t, y) = V_{k(t)}(x, t, y; G(x, t, y)), k(t) = ``segment_index(t, M)``; each example only
    touches its own segment's net, so every solver can integrate it. Segment nets are called as
    ``V_k(x, t, cond)`` without guidance (any field: ``MLPField``, ``UNetField`` ...) and as
    ``V_k(x, t, cond, h)`` with a guidance net G (``h = G(x, t, cond)``, e.g. ``SegmentMLP``).

    Args:
        segments: a list of M segment nets, or a factory ``() -> nn.Module`` called M times.
        num_segments: M, required with a factory (must match the list's length otherwise).
        guidance: the shared guidance net G ``(x, t, cond) -> h``, or None.
        projector: P, mapping h to the alignment target's space (training only), or None.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167.

    Example:
        >>> from flowforge.distill.blockwise_nets import SegmentMLP, SegmentMLPConfig
        >>> field = BlockwiseField(lambda: SegmentMLP(SegmentMLPConfig(hidden=16)), 2)
        >>> field(torch.randn(3, 2), torch.tensor([0.0, 0.5, 1.0])).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        segments: Sequence[nn.Module] | Callable[[], nn.Module],
        num_segments: int | None = None,
        guidance: nn.Module | None = None,
        projector: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if callable(segments) and not isinstance(segments, nn.Module):
            if num_segments is None or num_segments < 1:
                raise ValueError(
                    f"num_segments={num_segments!r} with a segment factory; pass M >= 1."
                )
            nets = [segments() for _ in range(num_segments)]
        else:
            nets = list(segments)
            if not nets or (num_segments is not None and num_segments != len(nets)):
                raise ValueError(
                    f"segments holds {len(nets)} nets but num_segments={num_segments!r}; pass "
                    "a non-empty list and leave num_segments=None (or equal to its length)."
                )
        if len({id(n) for n in nets}) != len(nets):
            raise ValueError("segments repeats a module; pass M distinct nets or a factory.")
        if projector is not None and guidance is None:
            raise ValueError("projector was given without a guidance net; pass guidance too.")
        self.segments = nn.ModuleList(nets)
        self.guidance = guidance
        self.projector = projector

    @property
    def num_segments(self) -> int:
        """M, the number of segments."""
        return len(self.segments)

    def features(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor | None:
        """h = G(x, t, cond), or None without a guidance net. Args: x (B, ...); t (B,)."""
        return None if self.guidance is None else self.guidance(x, t, cond)

    def velocity(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        segment: Tensor | int | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        """V_k(x, t, cond; h) with k given or routed from t, h given or computed by G.

        Args:
            x: (B, ...) states; t: (B,) times; cond: None, (B, ...) or an ImageCond.
            segment: an int for the whole batch, (B,) long per example, or None for k(t).
            features: (B, ...) guidance features h (e.g. the FRN's estimate), or None for G.

        Returns:
            (B, ...) velocity.
        """
        if self.guidance is None and features is not None:
            raise ValueError("features were given but the field has no guidance net; drop them.")
        check_batch("t", t, x.shape[0])
        if features is None:
            features = self.features(x, t, cond)
        extra = () if features is None else (features,)
        if segment is None:
            segment = segment_index(t, self.num_segments)
        if isinstance(segment, int):
            if not 0 <= segment < self.num_segments:
                raise ValueError(f"segment={segment} must lie in [0, {self.num_segments}).")
            return self.segments[segment](x, t, cond, *extra)
        out = None
        for k in torch.unique(segment).tolist():
            idx = (segment == k).nonzero().squeeze(1)  # (B_k,)
            extra_k = tuple(e[idx] for e in extra)
            v_k = self.segments[k](x[idx], t[idx], _take(cond, idx), *extra_k)  # (B_k, ...)
            out = v_k.new_zeros(x.shape) if out is None else out
            out = out.index_copy(0, idx, v_k)
        return out

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, ...); t (B,); cond or None. Returns: (B, ...) velocity of segment k(t)."""
        return self.velocity(x, t, cond)


def _check_model(model: object) -> BlockwiseField:
    if not isinstance(model, BlockwiseField):
        raise TypeError(
            f"model has type {type(model).__name__}; blockwise flow matching needs a "
            "BlockwiseField (M segment nets routed by time)."
        )
    return model


class BlockwiseLoss:
    """Blockwise flow matching with an even batch split, plus optional feature alignment.

    L = || V_k(x_t, t, y; h) - dx_t ||^2 + lambda (1 - cos(P(h), T(x_1))),
    t ~ U[tau_k, tau_{k+1}) on B / M examples per segment, h = G(x_t, t, y). The card's
    -cos alignment is written 1 - cos (same gradients, non-negative); with token features
    (B, N, F) the cosine is averaged over tokens. Label dropout for CFG: wrap the loss in
    ``flowforge.guidance.ConditionDropout``.

    Args:
        path: the affine path (card: linear, ``CondOTPath``; cosine optional).
        align_weight: lambda (card: 0.05); 0 disables the alignment term.
        align_target: the frozen target T(x_1) -> (B, ..., F') (card: DINOv2 features; toys:
            ``random_feature_target``); required iff align_weight > 0.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167.
        Representation Alignment for Generation (Yu et al., 2025), arXiv:2410.06940 (REPA).

    Example:
        >>> from flowforge.distill.blockwise_nets import SegmentMLP, SegmentMLPConfig
        >>> model = BlockwiseField(lambda: SegmentMLP(SegmentMLPConfig(hidden=16)), 4)
        >>> BlockwiseLoss()(model, torch.randn(8, 2), generator=torch.Generator()).shape
        torch.Size([8])
    """

    def __init__(
        self,
        path: AffinePath | None = None,
        align_weight: float = 0.0,
        align_target: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if align_weight < 0:
            raise ValueError(f"align_weight={align_weight!r} must be >= 0 (card: 0.05).")
        if (align_weight > 0) != (align_target is not None):
            raise ValueError(
                f"align_weight={align_weight!r} and align_target="
                f"{'None' if align_target is None else 'given'}; pass a target net exactly "
                "when align_weight > 0."
            )
        self.path = CondOTPath() if path is None else path
        self.align_weight = align_weight
        self.align_target = align_target

    def __call__(
        self,
        model: BlockwiseField,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: x_1 (B, ...) data, B >= M; cond (B,) or None. Returns: (B,) losses."""
        model = _check_model(model)
        B = x_1.shape[0]
        check_batch("cond", cond, B, ref="x_1")
        if self.align_weight > 0 and model.projector is None:
            raise ValueError("align_weight > 0 needs a BlockwiseField built with a projector.")
        x_0 = randn_like_gen(x_1, generator)
        t, k = segment_times(B, model.num_segments, generator, x_1.device, x_1.dtype)
        s = self.path.sample(x_0, x_1, t, validate=False)
        h = model.features(s.x_t, t, cond)
        loss = mse(model.velocity(s.x_t, t, cond, segment=k, features=h), s.dx_t)  # L_FM
        if self.align_weight > 0:
            with torch.no_grad():
                target = self.align_target(x_1)  # (B, ..., F')
            cos = F.cosine_similarity(model.projector(h), target, dim=-1)  # (B, ...)
            loss = loss + self.align_weight * (1 - cos.reshape(B, -1).mean(1))  # L_align
        return loss


class FeatureResidualLoss:
    """Second-stage objective of the feature residual network (G and the V_k frozen).

    h_hat = sg(G(x_{t_s}, t_s, y)) + c(t) FRN(x_t, t, y),  L = || h_hat - sg(G(x_t, t, y)) ||^2,
    t_s = tau_k, c(t) = (t - tau_k) / (tau_{k+1} - tau_k), with x_{t_s} and x_t from the same
    (x_0, x_1) pair (card pitfall) and the batch split evenly across segments.

    Args:
        field: the trained ``BlockwiseField`` with a guidance net (frozen here).
        path: the affine path the field was trained with.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167 (FRN).

    Example:
        >>> from flowforge.distill.blockwise_nets import (
        ...     FeatureMLP, FeatureMLPConfig, SegmentMLP, SegmentMLPConfig
        ... )
        >>> g = FeatureMLP(FeatureMLPConfig(out_dim=4, hidden=16))
        >>> seg = lambda: SegmentMLP(SegmentMLPConfig(hidden=16, feature_dim=4))
        >>> field = BlockwiseField(seg, 2, guidance=g)
        >>> frn = FeatureMLP(FeatureMLPConfig(out_dim=4, hidden=16))
        >>> FeatureResidualLoss(field)(frn, torch.randn(6, 2), generator=torch.Generator()).shape
        torch.Size([6])
    """

    def __init__(self, field: BlockwiseField, path: AffinePath | None = None) -> None:
        if _check_model(field).guidance is None:
            raise ValueError("field has no guidance net; an FRN approximates G's features.")
        self.field = field
        self.path = CondOTPath() if path is None else path

    def __call__(
        self,
        model: nn.Module,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: the FRN ``(x, t, cond) -> (B, ...)`` of h's shape; x_1 (B, ...), B >= M;
        cond (B,) or None. Returns: (B,) losses.
        """
        M, B = self.field.num_segments, x_1.shape[0]
        check_batch("cond", cond, B, ref="x_1")
        x_0 = randn_like_gen(x_1, generator)
        t, k = segment_times(B, M, generator, x_1.device, x_1.dtype)
        t_s = segment_boundaries(M, x_1.device, x_1.dtype)[k]  # segment start
        x_t = self.path.sample(x_0, x_1, t, validate=False).x_t
        x_ts = self.path.sample(x_0, x_1, t_s, validate=False).x_t  # same (x_0, x_1)
        with torch.no_grad():
            h_start, h = self.field.features(x_ts, t_s, cond), self.field.features(x_t, t, cond)
        coeff = _coefficient(t, k, M).reshape(B, *([1] * (h.dim() - 1)))
        return mse(h_start + coeff * model(x_t, t, cond), h)


def blockwise_sample(
    model: BlockwiseField,
    x_0: Tensor,
    steps_per_segment: int = 1,
    cond: Tensor | None = None,
    frn: nn.Module | None = None,
    segment_map: Sequence[int] | None = None,
) -> Tensor:
    """Euler from noise (t = 0) to data (t = 1), ``steps_per_segment`` steps in each segment.

    In segment k the grid is linspace(tau_k, tau_{k+1}, N + 1) and every step starts in
    [tau_k, tau_{k+1}); x <- x + dt V_k(x, t, y; h). Without an FRN h = G(x, t, y) at every step
    (cost per step: G + V_k); with one, G runs once at the segment start t_s and later steps use
    h_hat = G(x_{t_s}, t_s, y) + c(t) FRN(x, t, y) (cost: FRN + V_k), so G runs M times instead of
    M N. Total: M N steps. The state is float32 or wider; no ``no_grad`` inside.

    Args:
        model: the ``BlockwiseField``.
        x_0: (B, ...) noise.
        steps_per_segment: N >= 1.
        cond: None, (B, ...) or an ImageCond, passed to every net.
        frn: the feature residual network ``(x, t, cond) -> h``, or None.
        segment_map: the net used in segment k is ``segment_map[k]`` (default: k); the reversed
            map is the card's falsifier.

    Returns:
        (B, ...) samples at t = 1.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167 (ODE sampler).

    Example:
        >>> from flowforge.distill.blockwise_nets import SegmentMLP, SegmentMLPConfig
        >>> model = BlockwiseField(lambda: SegmentMLP(SegmentMLPConfig(hidden=16)), 3)
        >>> blockwise_sample(model, torch.randn(5, 2), steps_per_segment=2).shape
        torch.Size([5, 2])
    """
    model = _check_model(model)
    M = model.num_segments
    if steps_per_segment < 1:
        raise ValueError(f"steps_per_segment={steps_per_segment!r} must be >= 1.")
    if frn is not None and model.guidance is None:
        raise ValueError("frn was given but the model has no guidance net; pass frn=None.")
    segment_map = list(range(M)) if segment_map is None else list(segment_map)
    if len(segment_map) != M or not all(0 <= j < M for j in segment_map):
        raise ValueError(f"segment_map={segment_map} must hold M={M} segment indices in [0, {M}).")
    x = x_0.to(wider_float(x_0.dtype))
    B = x.shape[0]
    tau = segment_boundaries(M, x.device, x.dtype)
    for k in range(M):
        grid = torch.linspace(tau[k].item(), tau[k + 1].item(), steps_per_segment + 1)
        grid = grid.to(device=x.device, dtype=x.dtype)
        grid[0], grid[-1] = tau[k], tau[k + 1]
        h_start = None
        for n in range(steps_per_segment):
            t = grid[n].expand(B)
            if frn is None or n == 0:
                h = h_start = model.features(x, t, cond)  # G at every step, or at t_s only
            else:
                coeff = _coefficient(t, k, M).reshape(B, *([1] * (h_start.dim() - 1)))
                h = h_start + coeff * frn(x, t, cond)
            v = model.velocity(x, t, cond, segment=segment_map[k], features=h)
            x = x + (grid[n + 1] - grid[n]) * v
    return x

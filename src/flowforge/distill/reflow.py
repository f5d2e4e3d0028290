"""2-rectified flow with the rf++ recipe: reflow pairs, their objective, the rf++ sampler.

One round of reflow trains a student on *deterministic* noise -> sample pairs of a pretrained
teacher ODE, so the student's flow becomes (nearly) straight and one Euler step suffices:

    pairs       x_0 ~ N(0, I),  x_1 = ODE_teacher(x_0) from t = 0 to t = 1   (no churn)
    init        student <- teacher weights
    objective   x_t = t x_1 + (1 - t) x_0,  t ~ pi(t) proportional to e^{a t} + e^{a (1 - t)}
                L = w(t) d(v(x_t, t), x_1 - x_0) [+ L_P(x1_hat, x_1) / (1 - t)^p]
                x1_hat = x_t + (1 - t) v(x_t, t)
    sampler     x1_hat = x_t + (1 - t_i) v(x_t, t_i)
                x_{t_{i+1}} = t_{i+1} x1_hat + (1 - t_{i+1}) x_0      (re-interpolate to x_0)

Card 04 -> flowforge (the card runs t_card = 1 noise -> 0 data): t = 1 - t_card, the card's noise
z is our x_0, its data x our x_1, its target z - x is -(x_1 - x_0) (same norm), its z_t =
(1 - t_card) x + t_card z is our x_t, its x-prediction z_t - t_card v_card is our
x1_hat = x_t + (1 - t) v. The U-shaped density is symmetric, so it reads the same in both
conventions; the card's Huber weight (1 - t_card) is our ``weighting="t"`` (weight t), its
LPIPS ``/t_card`` (``lpips_divt``) our ``perceptual_over_time=True`` (divide by 1 - t); its
schedule t_0 = 1 - 1e-5 > ... > t_N = 0 is our 1e-5 < ... < 1.

How pairs reach the objective. ``flowforge.train.train`` hands ``objective(model, x, cond,
generator)`` one chunk of the data stream, and each pair must arrive whole (x_0 and its x_1 from
the same row). So the pairs are stored packed, ``pairs[i] = stack([x_0_i, x_1_i])`` of shape
(N, 2, ...), and :meth:`ReflowPairs.dataset` is a ``TensorDataset(pairs[, labels])``: the trainer
shuffles, splits across ranks and resumes it like any dataset (epochs without repeats), labels
become ``cond``, and :class:`ReflowLoss` unpacks the chunk ``(B, 2, ...)`` into x_0 = ``[:, 0]``
and x_1 = ``[:, 1]``. Nothing is looked up by index and the objective holds no data.

References:
    Improving the Training of Rectified Flows (Lee, Lin & Fanti, 2024), arXiv:2405.20320.
    Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow
    (Liu, Gong & Liu, 2023), arXiv:2209.03003.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowforge.losses.distances import mse, pseudo_huber
from flowforge.losses.time_samplers import UShapedTime
from flowforge.protocols import Field, TimeSampler
from flowforge.solvers.grids import check_time_grid, uniform_grid
from flowforge.solvers.ode import TABLEAUS, ODEMethod, sample_euler, sample_ode
from flowforge.utils import atomic_path, check_batch, check_choice, expand_like, wider_float

__all__ = [
    "ReflowDistance",
    "ReflowLoss",
    "ReflowPairs",
    "ReflowSampler",
    "ReflowWeighting",
    "init_from_teacher",
    "make_reflow_pairs",
    "reflow_sample",
    "straightness",
]

ReflowDistance = Literal["pseudo_huber", "mse"]
ReflowWeighting = Literal["none", "t"]
ReflowSampler = Literal["new", "euler"]
T_MIN = 1e-5  # rf++ clips t to [1e-5, 1 - 1e-5] in training and starts sampling at 1e-5


@dataclass
class ReflowPairs:
    """Reflow pairs stored packed: ``pairs[:, 0]`` is the noise x_0, ``pairs[:, 1]`` its x_1.

    Args:
        pairs: (N, 2, ...) with one feature dimension at least (2-D toys: (N, 2, 2)).
        cond: optional (N,) labels the teacher was conditioned on.

    Example:
        >>> p = ReflowPairs(torch.zeros(5, 2, 3))
        >>> len(p), tuple(p.x_1.shape), tuple(p.dataset()[0][0].shape)
        (5, (5, 3), (2, 3))
    """

    pairs: Tensor
    cond: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, Tensor) or self.pairs.dim() < 3 or self.pairs.shape[1] != 2:
            shape = tuple(self.pairs.shape) if isinstance(self.pairs, Tensor) else self.pairs
            raise ValueError(
                f"pairs has shape {shape}; pass (N, 2, ...) = torch.stack([x_0, x_1], 1) with "
                "x_0, x_1 of shape (N, D) or (N, C, H, W) (use make_reflow_pairs)."
            )
        check_batch("cond", self.cond, self.pairs.shape[0], ref="pairs")

    @property
    def x_0(self) -> Tensor:
        """(N, ...) the noise of each pair."""
        return self.pairs[:, 0]

    @property
    def x_1(self) -> Tensor:
        """(N, ...) the teacher's ODE endpoint of each pair."""
        return self.pairs[:, 1]

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def dataset(self) -> torch.utils.data.TensorDataset:
        """A ``TensorDataset`` of packed pairs (and labels) for ``flowforge.train.train``."""
        if self.cond is None:
            return torch.utils.data.TensorDataset(self.pairs)
        return torch.utils.data.TensorDataset(self.pairs, self.cond)

    def save(self, path: str | os.PathLike) -> None:
        """Write the pairs (and labels) to a safetensors file, atomically."""
        tensors = {"pairs": self.pairs.contiguous()}
        if self.cond is not None:
            tensors["cond"] = self.cond.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReflowPairs:
        """Read pairs written by :meth:`save`."""
        tensors = load_file(str(path))
        if "pairs" not in tensors:
            raise ValueError(f"{path} holds no 'pairs' tensor; pass a file written by save().")
        return cls(tensors["pairs"], tensors.get("cond"))


@torch.no_grad()
def make_reflow_pairs(
    teacher: Field,
    n: int,
    shape: tuple[int, ...],
    n_steps: int = 100,
    solver: ODEMethod = "euler",
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> ReflowPairs:
    """Draw x_0 ~ N(0, I) and solve the teacher ODE from t = 0 to t = 1 in batches.

    x_1 = ODE_teacher(x_0) with a fixed-step deterministic solver on ``uniform_grid(n_steps)``
    (``solver`` costs ``NFE_PER_STEP[solver]`` teacher calls per step). All noise is drawn first
    from ``generator``, so the pairs do not depend on ``batch_size``. Runs without gradients; the
    pairs are returned on the CPU (the trainer moves each chunk to its device).

    Args:
        teacher: the frozen velocity field ``teacher(x, t, cond)`` (in eval mode).
        n: number of pairs N.
        shape: the shape of one example, e.g. ``(2,)`` or ``(1, 8, 8)``.
        n_steps: solver steps (card 04: Heun 18 steps for CIFAR-10 EDM; 100 Euler on the toy).
        solver: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        cond: optional (N,) labels passed to the teacher and stored with the pairs.
        generator: random source of the noise (its device is where the noise is drawn).
        batch_size: examples per teacher solve.
        device: where the teacher runs; None uses the teacher's parameters' device (else CPU).
        dtype: noise dtype; None uses the teacher's parameter dtype, widened to float32 or more.
        progress: show a tqdm progress bar over batches.

    Returns:
        :class:`ReflowPairs` with pairs (N, 2, *shape) and the labels.

    References:
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320, Sec. 2.

    Example:
        >>> p = make_reflow_pairs(lambda x, t, c=None: -x, 3, (2,), n_steps=4)
        >>> torch.allclose(p.x_1, p.x_0 * 0.75**4)  # Euler on dx/dt = -x
        True
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive number of pairs, e.g. 50_000.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 4096.")
    check_choice("solver", solver, TABLEAUS)
    check_batch("cond", cond, n, ref="n")
    param = next(iter(teacher.parameters()), None) if isinstance(teacher, nn.Module) else None
    device = (
        torch.device(device)
        if device is not None
        else (param.device if param is not None else torch.device("cpu"))
    )
    dtype = wider_float(dtype or (param.dtype if param is not None else torch.get_default_dtype()))
    noise_device = generator.device if generator is not None else torch.device("cpu")
    x_0 = torch.randn((n, *shape), generator=generator, device=noise_device, dtype=dtype)
    grid = uniform_grid(n_steps, device=device, dtype=dtype)
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc="reflow pairs", disable=not progress):
        x_0_b = x_0[start : start + batch_size].to(device)  # (b, ...)
        cond_b = cond[start : start + batch_size].to(device) if cond is not None else None
        x_1_b = sample_ode(teacher, x_0_b, grid, method=solver, cond=cond_b)
        chunks.append(torch.stack([x_0_b, x_1_b], 1).cpu())  # (b, 2, ...)
    return ReflowPairs(torch.cat(chunks), cond.cpu() if cond is not None else None)


class ReflowLoss:
    """rf++ reflow objective on packed pairs, one value per example.

    x_t = t x_1 + (1 - t) x_0,  v = model(x_t, t, cond),  x1_hat = x_t + (1 - t) v,

        L = w(t) d(v, x_1 - x_0) + [ L_P(x1_hat, x_1) / (1 - t)^p ]

    with t ~ ``time_sampler`` (rf++: the U-shaped ``UShapedTime(a=4)`` on [1e-5, 1 - 1e-5]),
    d the pseudo-Huber distance (sqrt(||.||^2 + c^2) - c) / D (rf++ code: c = 0.00054 D; the
    paper writes 0.00054 sqrt(D)) or the MSE, w(t) = 1 (``"none"``) or t (``"t"``, the card's
    (1 - t_card) of Configs E/F), and the optional perceptual term L_P (LPIPS in the paper),
    divided by 1 - t when ``perceptual_over_time`` (the card's ``lpips_divt``, CIFAR Config F).
    rf++'s official ``huber`` loss is unweighted; the (1 - t_card) weight comes with LPIPS.

    ``pair`` is a chunk of :meth:`ReflowPairs.dataset`: (B, 2, ...) = stack([x_0, x_1], 1).

    Args:
        time_sampler: training-time density; None uses ``UShapedTime(4.0, 1e-5, 1 - 1e-5)``.
        distance: ``"pseudo_huber"`` (rf++) or ``"mse"`` (vanilla reflow, card 04's toy check).
        huber_c: the pseudo-Huber constant c; None is the rf++ code's 0.00054 D.
        weighting: ``"none"`` or ``"t"`` (weight t on the distance).
        perceptual: optional ``perceptual(x1_hat, x_1) -> (B,)`` (e.g. an LPIPS wrapper that
            resizes to 224 and maps [-1, 1] to [0, 1]).
        perceptual_over_time: divide the perceptual term by 1 - t (needs ``perceptual``).

    References:
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320,
        Sec. 3.1 (U-shaped t), Sec. 3.2 (LPIPS-Huber), Eq. 5.

    Example:
        >>> pair = torch.stack([torch.randn(4, 2), torch.randn(4, 2)], 1)  # (B, 2, D)
        >>> ReflowLoss()(lambda x, t, c=None: x, pair).shape
        torch.Size([4])
    """

    def __init__(
        self,
        time_sampler: TimeSampler | None = None,
        distance: ReflowDistance = "pseudo_huber",
        huber_c: float | None = None,
        weighting: ReflowWeighting = "none",
        perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
        perceptual_over_time: bool = False,
    ) -> None:
        check_choice("distance", distance, ("pseudo_huber", "mse"))
        check_choice("weighting", weighting, ("none", "t"))
        if huber_c is not None and distance != "pseudo_huber":
            raise ValueError(
                f"huber_c={huber_c!r} is only used with distance='pseudo_huber' (got "
                f"distance={distance!r}); drop huber_c or use the pseudo-Huber distance."
            )
        if huber_c is not None and not huber_c >= 0:
            raise ValueError(f"huber_c={huber_c!r} must be >= 0 (None uses 0.00054 * D).")
        if perceptual_over_time and perceptual is None:
            raise ValueError(
                "perceptual_over_time=True needs a perceptual term; pass perceptual=... "
                "(e.g. an LPIPS wrapper) or leave perceptual_over_time=False."
            )
        self.time_sampler = time_sampler if time_sampler is not None else UShapedTime(4.0)
        self.distance = distance
        self.huber_c = huber_c
        self.weighting = weighting
        self.perceptual = perceptual
        self.perceptual_over_time = perceptual_over_time

    def __call__(
        self,
        model: Field,
        pair: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: pair (B, 2, ...) packed [x_0, x_1]; cond (B,) or None. Returns: (B,) losses."""
        if pair.dim() < 3 or pair.shape[1] != 2:
            raise ValueError(
                f"ReflowLoss got a batch of shape {tuple(pair.shape)}; it trains on packed pairs "
                "(B, 2, ...) = stack([x_0, x_1], 1). Pass data=ReflowPairs.dataset() (from "
                "make_reflow_pairs) to train(), not the raw data."
            )
        x_0, x_1 = pair[:, 0], pair[:, 1]  # (B, ...) each
        B = pair.shape[0]
        check_batch("cond", cond, B, ref="pair")
        t = self.time_sampler(B, generator=generator, device=pair.device, dtype=pair.dtype)
        t_ = expand_like(t, x_1)  # (B, 1, ..., 1)
        x_t = t_ * x_1 + (1 - t_) * x_0
        v = model(x_t, t, cond)  # (B, ...)
        dx_t = x_1 - x_0  # the card's z - x, negated
        if self.distance == "pseudo_huber":
            loss = pseudo_huber(v, dx_t, self.huber_c)  # (B,)
        else:
            loss = mse(v, dx_t)
        if self.weighting == "t":
            loss = t * loss  # card: (1 - t_card) L_H
        if self.perceptual is not None:
            x1_hat = x_t + (1 - t_) * v  # card: z_t - t_card v_card
            l_p = self.perceptual(x1_hat, x_1)  # (B,)
            loss = loss + (l_p / (1 - t) if self.perceptual_over_time else l_p)
        return loss


def reflow_sample(
    model: Field,
    x_0: Tensor,
    n_steps: int = 1,
    cond: Tensor | None = None,
    sampler: ReflowSampler = "new",
    time_grid: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Map noise x_0 at t = 0 to data at t = 1 with rf++'s "new" sampler or plain Euler.

    ``"new"`` (reuses the initial noise; 1 NFE per step)::

        x1_hat = x_{t_i} + (1 - t_i) v(x_{t_i}, t_i)
        x_{t_{i+1}} = t_{i+1} x1_hat + (1 - t_{i+1}) x_0

    ``"euler"`` (the card's "default"; 1 NFE per step): x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i) v.
    Both agree for one step and on any exactly straight flow. The state is kept in float32 or
    wider; not wrapped in ``no_grad`` (differentiable).

    Args:
        model: the student velocity field ``model(x, t, cond)``.
        x_0: (B, ...) noise at t = 0 (the same x_0 the re-interpolation returns to).
        n_steps: N steps (N NFE).
        cond: optional (B,) labels.
        sampler: ``"new"`` or ``"euler"``.
        time_grid: (N + 1,) increasing times in [0, 1] (with n_steps = N); None is t_i = i / N
            with t_0 = 1e-5 (the card's t_0 = 1 - 1e-5: the student never trained below 1e-5).
        return_trajectory: also return the states (N + 1, B, ...) at every grid time.

    Returns:
        (B, ...) samples at ``time_grid[-1]``; with ``return_trajectory`` the pair (x, trajectory).

    References:
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320, Sec. 3.3;
        official ``sample_ode_generative(..., sampler='new')``.

    Example:
        >>> straight = lambda x, t, c=None: torch.ones_like(x)  # x_t = x_0 + t
        >>> x = reflow_sample(straight, torch.zeros(2, 1), n_steps=3)
        >>> torch.allclose(x, torch.ones(2, 1), atol=1e-4)  # up to the start at t_0 = 1e-5
        True
    """
    check_choice("sampler", sampler, ("new", "euler"))
    if not isinstance(x_0, Tensor) or x_0.dim() == 0:
        raise ValueError("x_0 must be a (B, ...) tensor with a leading batch dimension.")
    x_0 = x_0.to(wider_float(x_0.dtype))  # never integrate in half precision
    B = x_0.shape[0]
    check_batch("cond", cond, B, ref="x_0")
    if time_grid is None:
        time_grid = uniform_grid(n_steps, device=x_0.device, dtype=x_0.dtype)
        time_grid[0] = T_MIN
    else:
        check_time_grid(time_grid)
        if time_grid.shape[0] != n_steps + 1:
            raise ValueError(
                f"time_grid has {time_grid.shape[0]} times but n_steps={n_steps}; pass "
                f"n_steps={time_grid.shape[0] - 1} (one step per pair of grid times)."
            )
        if not ((time_grid.diff() > 0).all() and time_grid[0] >= 0 and time_grid[-1] <= 1):
            raise ValueError(
                f"time_grid={time_grid.tolist()} must increase within [0, 1] (noise -> data)."
            )
        time_grid = time_grid.to(device=x_0.device, dtype=x_0.dtype)
    x = x_0
    trajectory = [x]
    for t_cur, t_next in zip(time_grid[:-1], time_grid[1:], strict=True):
        v = model(x, t_cur.expand(B), cond)  # (B, ...)
        if sampler == "euler":
            x = x + (t_next - t_cur) * v
        else:
            x1_hat = x + (1 - t_cur) * v  # the card's x-prediction z_t - t_card v_card
            x = t_next * x1_hat + (1 - t_next) * x_0  # back onto the segment [x_0, x1_hat]
        if return_trajectory:
            trajectory.append(x)
    return (x, torch.stack(trajectory)) if return_trajectory else x


def straightness(
    field: Field, x_0: Tensor, n_steps: int = 100, cond: Tensor | None = None
) -> Tensor:
    """Per-example straightness of the Euler trajectory from x_0 (0 for a straight flow).

    S = sum_i dt ||v(x_{t_i}, t_i) - (x_N - x_0)||^2 on the uniform grid t_i = i / N, where x_N
    is the trajectory's endpoint (so x_N - x_0 is its average velocity), as card 04 writes it
    (rf++'s ``utils.straightness`` averages over the D features instead: S / D).

    Args:
        field: velocity ``field(x, t, cond)``.
        x_0: (B, ...) starting noise.
        n_steps: N Euler steps (card 04 uses 100).
        cond: optional (B,) labels.

    Returns:
        (B,) straightness values.

    References:
        Flow Straight and Fast (Liu et al., 2023), arXiv:2209.03003, Eq. 5 (S(Z)).
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320.

    Example:
        >>> curved = lambda x, t, c=None: torch.cat([torch.ones_like(x[:, :1]), 2 * t[:, None]], 1)
        >>> round(straightness(curved, torch.zeros(1, 2), n_steps=1000).item(), 3)  # var(2t)
        0.333
    """
    grid = uniform_grid(n_steps, device=x_0.device, dtype=wider_float(x_0.dtype))
    x_n, traj = sample_euler(field, x_0, grid, cond, return_trajectory=True)  # traj (N+1, B, ...)
    velocities = traj.diff(dim=0) / grid.diff().reshape(-1, *[1] * x_0.dim())  # (N, B, ...)
    mean_velocity = x_n - traj[0]  # (B, ...): the grid spans [0, 1]
    return (velocities - mean_velocity).square().flatten(2).sum(2).mean(0)  # (B,)


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """Copy the teacher's weights into the student (same architecture) and make them trainable.

    rf++ (card 04, pitfalls): initialising from the teacher keeps most of reflow's gain, training
    2-rectified flow from scratch loses it. The student keeps its own dtype and device.

    Args:
        student: the network to train (e.g. a fresh ``MLPField`` with the teacher's config).
        teacher: the pretrained network.

    Returns:
        ``student``, updated in place, with ``requires_grad`` on every parameter.

    Example:
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).requires_grad_(False)
        >>> torch.equal(init_from_teacher(a, b).weight, b.weight)
        True
    """
    try:
        student.load_state_dict(teacher.state_dict())
    except RuntimeError as e:
        raise ValueError(
            f"cannot copy the teacher's weights into the student ({e}); build the student with "
            "the teacher's architecture and config."
        ) from e
    return student.requires_grad_(True)

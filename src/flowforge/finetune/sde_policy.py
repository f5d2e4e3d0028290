"""The SDE policy of a flow: Gaussian steps with tractable densities, sampling and rollouts.

The Euler sampler of a velocity field becomes an SDE with the same time marginals, so every step
is a Gaussian policy with a tractable density (what DanceGRPO optimises, ``grpo.py``):

    x1_hat = x + (1 - t) v(x, t)                        data estimate
    s      = -(x - t x1_hat) / (1 - t)^2                Gaussian-path score from the velocity
    mu     = x + dt (v + eta^2 / 2 s),  std = eta sqrt(dt)   one step t -> t + dt
    log pi = mean_d log N(x_{t + dt}; mu, std^2)         per-element mean log-density

Card 13 -> flowforge (the card runs sigma = 1 noise -> sigma = 0 data): t = 1 - sigma, the
card's data x0 is our x_1 and its noise our x_0, its velocity d x / d sigma is -v, so its
x0_hat = x - sigma v_card is our x1_hat = x + (1 - t) v; the score is the same function of x;
with Delta sigma = -dt its mean x + Delta sigma (v_card - eta^2 / 2 s) is our
x + dt (v + eta^2 / 2 s), and its std eta sqrt(sigma_i - sigma_{i+1}) our eta sqrt(dt). Its grid
sigma_i = shift(linspace(1, 0, S + 1)) with shift(sigma) = a sigma / (1 + (a - 1) sigma) is
exactly ``shifted_grid(S, a)``. With eta = 0 the step is Euler's x + dt v, bit for bit.

The end t = 1. Writing x - t x1_hat = (1 - t)(x - t v), the score is s = -(x - t v) / (1 - t),
which is how it is computed (no cancellation of two large terms near the data). It is only ever
evaluated at the *start* of a step, and grids increase strictly within [0, 1], so every start is
< 1 and the score is finite; t = 1 is only reached as the end of the last step, where nothing is
evaluated. On the last step dt = 1 - t, so the drift term eta^2 / 2 dt s = -eta^2 / 2 (x - t v)
stays bounded.

References:
    DanceGRPO: Unleashing GRPO on Visual Generation (Xue et al., 2025), arXiv:2505.07818;
    reference code XueZeyue/DanceGRPO (``flux_step``, ``run_sample_step``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from flowforge.protocols import Field
from flowforge.solvers.ode import prepare_state
from flowforge.utils import expand_like, randn_like_gen

__all__ = [
    "GRPORollout",
    "sde_mean_std",
    "sde_rollout",
    "sde_sample",
    "transition_kl",
    "transition_log_prob",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_eta(eta: float, allow_zero: bool) -> None:
    if not _is_real(eta) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta={eta!r} must be a finite number >= 0 (card: 0.3; toy: 0.7).")
    if eta == 0 and not allow_zero:
        raise ValueError(
            "eta=0 makes every step deterministic (std = 0), so the transition log-probabilities "
            "are infinite and the policy has no gradient; train with eta > 0 (card: 0.3 for "
            "FLUX, 0.7 on the toy) and sample with eta=0 (sde_sample or sample_euler) to evaluate."
        )


@dataclass
class GRPORollout:
    """Stored SDE trajectories: the transitions (x_i, x_{i+1}, t_i) and log pi_old of each step.

    Args:
        states: (S + 1, B, ...) x_{t_0}, ..., x_{t_S}; states[0] is the noise, states[-1] the
            sample the reward scores.
        log_probs: (S, B) log pi_old(x_{i+1} | x_i), per-element means (see
            :func:`transition_log_prob`).
        time_grid: (S + 1,) the increasing times the rollout used.
        eta: the noise scale the rollout used (the loss recomputes log-probs with it).
        cond: (B, ...) conditioning passed to the model, or None.

    Example:
        >>> grid = torch.tensor([0.0, 0.5, 1.0])
        >>> r = GRPORollout(torch.zeros(3, 4, 2), torch.zeros(2, 4), grid, eta=0.7)
        >>> tuple(r.x_1.shape), len(r), len(r.subset(torch.tensor([0, 2])))
        ((4, 2), 4, 2)
    """

    states: Tensor
    log_probs: Tensor
    time_grid: Tensor
    eta: float
    cond: Tensor | None = None

    def __post_init__(self) -> None:
        S = self.time_grid.shape[0] - 1
        assert self.states.shape[0] == S + 1, "states must be (S + 1, B, ...)"
        assert self.log_probs.shape == (S, self.states.shape[1]), "log_probs must be (S, B)"

    @property
    def x_1(self) -> Tensor:
        """(B, ...) the final samples x_{t_S}."""
        return self.states[-1]

    def __len__(self) -> int:
        return self.states.shape[1]

    def subset(self, index: Tensor) -> GRPORollout:
        """The trajectories ``index`` (a (b,) index tensor) as a rollout of b samples."""
        cond = self.cond[index] if self.cond is not None else None
        return GRPORollout(
            self.states[:, index], self.log_probs[:, index], self.time_grid, self.eta, cond
        )


def sde_mean_std(
    model: Field,
    x: Tensor,
    t: Tensor,
    t_next: Tensor,
    eta: float,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean and std of one Gaussian SDE step from t to t_next > t (card 13, "ODE -> SDE step").

        v = model(x, t),  s = -(x - t x1_hat) / (1 - t)^2 = -(x - t v) / (1 - t)
        mu = x + dt (v + eta^2 / 2 s),  std = eta sqrt(dt),  dt = t_next - t

    This is the Euler-Maruyama step of dx = (v + eta^2 / 2 grad log p_t) dt + eta dW, whose
    marginals are those of the flow's ODE dx = v dt; eta = 0 gives Euler's step exactly (the
    score is then not computed). Needs t < 1 (the score has 1 - t in its denominator).

    Args:
        model: the velocity field ``model(x, t, cond)``.
        x: (B, ...) states at times t.
        t, t_next: (B,) start and end times, 0 <= t < t_next <= 1.
        eta: the noise scale eta >= 0.
        cond: optional (B, ...) conditioning.

    Returns:
        (mean (B, ...), std (B,)).

    References:
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818; ``flux_step`` of the reference
        code.

    Example:
        >>> x, t = torch.zeros(2, 2), torch.zeros(2)
        >>> mean, std = sde_mean_std(lambda x, t, c=None: x + 1, x, t, t + 0.25, eta=0.0)
        >>> mean[0].tolist(), std.tolist()  # Euler: x + 0.25 v
        ([0.25, 0.25], [0.0, 0.0])
    """
    t_, dt = expand_like(t, x), expand_like(t_next - t, x)  # (B, 1, ..., 1)
    v = model(x, t, cond)  # (B, ...)
    drift = v
    if eta > 0:
        score = -(x - t_ * v) / (1 - t_)  # = -(x - t x1_hat) / (1 - t)^2, finite for t < 1
        drift = v + 0.5 * eta**2 * score
    return x + dt * drift, eta * (t_next - t).sqrt()


def transition_log_prob(x_next: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x_next; mean, std^2 I) averaged over the elements of each example.

        log pi = mean_d [ -(x_next - mu)^2 / (2 std^2) - log std - 1/2 log(2 pi) ]

    The full normaliser is kept; the mean over the D elements (not the sum) is the reference
    code's, so log pi is 1/D of the joint density's log and ratios are exp(mean_d ...), which
    is why its clip range is as small as 1e-4.

    Args:
        x_next: (B, ...) the states reached.
        mean: (B, ...) the step means.
        std: (B,) the step stds, all > 0.

    Returns:
        (B,) per-element mean log-densities.

    Example:
        >>> lp = transition_log_prob(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1))
        >>> round(lp.item(), 4)  # -1/2 log(2 pi)
        -0.9189
    """
    if not bool((std > 0).all()):
        raise ValueError(
            f"std has values <= 0 (min {std.min().item():.3g}); a Gaussian step needs std > 0: "
            "use eta > 0 and a strictly increasing time grid."
        )
    s = expand_like(std, x_next)  # (B, 1, ..., 1)
    log_prob = -(x_next - mean).square() / (2 * s**2) - s.log() - _LOG_SQRT_2PI
    return log_prob.flatten(1).mean(1)  # (B,)


def transition_kl(mean: Tensor, mean_base: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2 I) || N(mean_base, std^2 I)) averaged over elements, like the log-probs.

        KL = mean_d (mu_theta - mu_base)^2 / (2 std^2)

    Args:
        mean, mean_base: (B, ...) the step means of the tuned and the base model.
        std: (B,) the shared step std, > 0.

    Returns:
        (B,) per-element mean KL divergences.

    Example:
        >>> transition_kl(torch.ones(1, 2), torch.zeros(1, 2), torch.full((1,), 0.5)).item()
        2.0
    """
    s = expand_like(std, mean)
    return ((mean - mean_base).square() / (2 * s**2)).flatten(1).mean(1)  # (B,)


def _check_grid(x_0: Tensor, time_grid: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
    x, grid = prepare_state(x_0, time_grid, cond)
    if not (bool((grid.diff() > 0).all()) and grid[0] >= 0 and grid[-1] <= 1):
        raise ValueError(
            f"time_grid={grid.tolist()} must increase within [0, 1] (noise -> data), e.g. "
            "shifted_grid(n_steps, shift) or uniform_grid(n_steps)."
        )
    return x, grid


def sde_sample(
    model: Field,
    x_0: Tensor,
    time_grid: Tensor,
    eta: float,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the policy's SDE along ``time_grid``; eta = 0 is the deterministic Euler ODE sample.

    x_{i+1} = mu(x_i, t_i) + std_i xi_i, xi_i ~ N(0, I) (:func:`sde_mean_std`); with eta = 0 no
    noise is drawn and the result equals ``sample_euler(model, x_0, time_grid)``. The state is
    kept in float32 or wider; not wrapped in ``no_grad``.

    Args:
        model: the velocity field ``model(x, t, cond)``.
        x_0: (B, ...) noise at ``time_grid[0]``.
        time_grid: (S + 1,) strictly increasing times in [0, 1].
        eta: the noise scale eta >= 0 (0 at evaluation).
        cond: optional (B, ...) conditioning.
        generator: random source of the step noise.

    Returns:
        (B, ...) the states at ``time_grid[-1]``.

    References:
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818.

    Example:
        >>> x = sde_sample(lambda x, t, c=None: -x, torch.ones(1, 1), torch.linspace(0, 1, 3), 0.0)
        >>> x.item()  # Euler on dx/dt = -x
        0.25
    """
    _check_eta(eta, allow_zero=True)
    x, grid = _check_grid(x_0, time_grid, cond)
    B = x.shape[0]
    for t_cur, t_next in zip(grid[:-1], grid[1:], strict=True):
        mean, std = sde_mean_std(model, x, t_cur.expand(B), t_next.expand(B), eta, cond)
        x = mean if eta == 0 else mean + expand_like(std, x) * randn_like_gen(x, generator)
    return x


@torch.no_grad()
def sde_rollout(
    model: Field,
    x_0: Tensor,
    time_grid: Tensor,
    eta: float,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> GRPORollout:
    """Sample S SDE steps from x_0 and store every transition with its old log-probability.

    For i = 0..S-1: (mu_i, std_i) = sde_mean_std(x_i, t_i), x_{i+1} = mu_i + std_i xi_i and
    log pi_old,i = transition_log_prob(x_{i+1}, mu_i, std_i). Runs without gradients.

    Args:
        model: the current policy's velocity field.
        x_0: (B, ...) noise at ``time_grid[0]`` (repeat it within a group for init_same_noise).
        time_grid: (S + 1,) strictly increasing times in [0, 1].
        eta: the noise scale, > 0 (0 is refused: log-probs would be infinite).
        cond: optional (B, ...) conditioning.
        generator: random source of the step noise.

    Returns:
        :class:`GRPORollout` with states (S + 1, B, ...) and log_probs (S, B).

    References:
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818; ``run_sample_step`` of the reference
        code.

    Example:
        >>> grid = torch.linspace(0, 1, 6)
        >>> r = sde_rollout(lambda x, t, c=None: -x, torch.zeros(4, 2), grid, eta=0.5)
        >>> tuple(r.states.shape), tuple(r.log_probs.shape)
        ((6, 4, 2), (5, 4))
    """
    _check_eta(eta, allow_zero=False)
    x, grid = _check_grid(x_0, time_grid, cond)
    B = x.shape[0]
    states, log_probs = [x], []
    for t_cur, t_next in zip(grid[:-1], grid[1:], strict=True):
        mean, std = sde_mean_std(model, x, t_cur.expand(B), t_next.expand(B), eta, cond)
        x = mean + expand_like(std, x) * randn_like_gen(x, generator)
        states.append(x)
        log_probs.append(transition_log_prob(x, mean, std))
    return GRPORollout(torch.stack(states), torch.stack(log_probs), grid, float(eta), cond)

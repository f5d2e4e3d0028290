"""Card 02 check 2: learned stochastic-interpolant drift b and score s on the 2-D checkerboard.

One-sided linear interpolant x_t = (1 - t) x_0 + t x_1 with a Gaussian base (the reference
notebooks' setting). Two separate MLPs (4 x 256 ReLU, input (x, t)) trained with Adam (lr 2e-3,
StepLR every 1500 steps x 0.4), batch 2000, for ``--steps`` steps each:

* b with ``InterpolantLoss(si, "drift")`` (one-sided, b = v; t ~ U(0, 1)),
* s with ``InterpolantLoss(si, "score", antithetic=True, t_max=1 - delta)``, delta = 1e-3.

Sampling from x_0 ~ N(0, I): the probability-flow ODE dX = b dt (dopri5, atol = rtol = 1e-5,
and Heun with 100 steps), and the SDE dX = [b + eps s] dt + sqrt(2 eps) dW with eps = 0.5 and
100 steps (the card's setting; Heun as in the reference code, and Euler-Maruyama). Quality: sliced
W2 (512 fixed directions) between n model samples and n fresh target samples, median over 3
target draws, beside the finite-sample floor (median over 5 pairs of fresh target sets).

The score check runs the same training code on a Gaussian target rho_1 = N(m, Sigma), where the
score of x_t ~ N(t m, t^2 Sigma + (1 - t)^2 I) is analytic: the held-out mean of L_s for the
learned s must be within 10 % of its Monte-Carlo value under the exact score (same held-out
x_0, x_1, t, same antithetic estimator).

Pass criteria (card 02, check 2): SWD(ODE) <= 2.5 x floor, SWD(SDE, eps = 0.5) <= 2.5 x floor,
|L_s(learned) - L_s(exact)| / |L_s(exact)| <= 0.10.

Run: python benchmarks/stochastic_interpolants.py [--steps 6000]   (about 15-25 minutes on one
shared CPU core; --steps 500 for a smoke run). Exits with status 1 if a criterion fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.data.toy2d import checkerboard
from flowforge.losses.interpolant import InterpolantLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.interpolant import StochasticInterpolant
from flowforge.solvers.adaptive import sample_dopri5
from flowforge.solvers.ode import sample_heun
from flowforge.solvers.sde import sample_sde

DELTA = 1e-3  # score training times t in [0, 1 - DELTA] (card 02 pitfalls)
GAUSS_MEAN = torch.tensor([1.0, -0.5])
GAUSS_COV = torch.tensor([[0.6, 0.3], [0.3, 0.4]])


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    return checkerboard(n, generator)[0]


def sample_gaussian(n: int, generator: torch.Generator | None = None) -> Tensor:
    chol = torch.linalg.cholesky(GAUSS_COV)
    return GAUSS_MEAN + torch.randn(n, 2, generator=generator) @ chol.T


def exact_gaussian_score(x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """s(x, t) = -C_t^{-1} (x - t m), C_t = t^2 Sigma + (1 - t)^2 I (one-sided linear)."""
    eye = torch.eye(2, dtype=x.dtype)
    C = t[:, None, None] ** 2 * GAUSS_COV.to(x) + (1 - t)[:, None, None] ** 2 * eye  # (B, 2, 2)
    r = x - t[:, None] * GAUSS_MEAN.to(x)
    return -torch.linalg.solve(C, r.unsqueeze(-1)).squeeze(-1)


def swd(x: Tensor, y: Tensor) -> Tensor:
    """Sliced W2 with 512 fixed directions (the same directions for every comparison)."""
    return sliced_wasserstein(
        x, y, num_projections=512, generator=torch.Generator().manual_seed(7)
    )


def make_net(seed: int) -> MLPField:
    torch.manual_seed(seed)
    cfg = MLPConfig(dim=2, hidden=256, depth=4, time_embed_dim=0, activation="relu")
    return MLPField(cfg)


def train(
    loss_fn: InterpolantLoss,
    sample_data: Callable[[int, torch.Generator | None], Tensor],
    args: argparse.Namespace,
    name: str,
) -> tuple[MLPField, float, float]:
    """Train one field with Adam + StepLR; returns (net, seconds, mean loss of the last 500)."""
    net = make_net(args.seed)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1500, gamma=0.4)
    g_data = torch.Generator().manual_seed(args.seed + 1)
    g_loss = torch.Generator().manual_seed(args.seed + 2)
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        loss = loss_fn(net, sample_data(args.batch, g_data), generator=g_loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= args.steps - 500:
            recent.append(loss.item())
        if args.log_every and (step + 1) % args.log_every == 0:
            print(f"  {name} step {step + 1}: loss {loss.item():.4f}", flush=True)
    return net, time.perf_counter() - start, sum(recent) / max(len(recent), 1)


def median_swd(x: Tensor, n: int, seed: int) -> float:
    """Median SWD of the samples against 3 fresh target sets."""
    assert torch.isfinite(x).all(), "non-finite samples"
    g = torch.Generator().manual_seed(seed)
    return sorted(swd(x, sample_checkerboard(n, g)).item() for _ in range(3))[1]


@torch.no_grad()
def held_out_score_loss(
    loss_fn: InterpolantLoss, score: Callable, n: int, batch: int, seed: int
) -> tuple[float, float]:
    """Mean and standard error of L_s over n held-out Gaussian-target examples."""
    g = torch.Generator().manual_seed(seed)
    values = torch.cat([loss_fn(score, sample_gaussian(batch, g), generator=g)
                        for _ in range(n // batch)])  # fmt: skip
    return values.mean().item(), (values.std() / values.numel() ** 0.5).item()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6000, help="training steps per network (6000)")
    p.add_argument("--batch", type=int, default=2000, help="batch size (2000)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (2e-3)")
    p.add_argument("--eps", type=float, default=0.5, help="SDE diffusion coefficient (0.5)")
    p.add_argument("--sde-steps", type=int, default=100, help="SDE / Heun ODE steps (100)")
    p.add_argument("--n-eval", type=int, default=10_000, help="samples for SWD (10000)")
    p.add_argument("--n-held-out", type=int, default=200_000, help="held-out L_s examples")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--log-every", type=int, default=1000, help="print the loss every k steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    si = StochasticInterpolant("linear", one_sided=True)
    drift_loss = InterpolantLoss(si, "drift")
    score_loss = InterpolantLoss(si, "score", antithetic=True, t_max=1 - DELTA)

    b_net, b_sec, b_loss = train(drift_loss, sample_checkerboard, args, "b (checkerboard)")
    s_net, s_sec, s_loss = train(score_loss, sample_checkerboard, args, "s (checkerboard)")
    sg_net, sg_sec, sg_loss = train(score_loss, sample_gaussian, args, "s (Gaussian)")

    n = args.n_eval
    floor = finite_sample_floor(
        swd, sample_checkerboard, n, repeats=5, generator=torch.Generator().manual_seed(123)
    ).item()
    x_0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1000))
    grid = torch.linspace(0, 1, args.sde_steps + 1)
    rows = []
    with torch.no_grad():
        x, nfe = sample_dopri5(b_net, x_0, atol=1e-5, rtol=1e-5, return_nfe=True)
        rows.append(("ODE dopri5 (1e-5)", nfe, median_swd(x, n, 2000)))
        x = sample_heun(b_net, x_0, grid)
        rows.append((f"ODE Heun {args.sde_steps}", 2 * args.sde_steps, median_swd(x, n, 2000)))
        for method, nfe in (("heun", 4 * args.sde_steps), ("euler_maruyama", 2 * args.sde_steps)):
            g = torch.Generator().manual_seed(3000)
            x = sample_sde(b_net, s_net, x_0, grid, args.eps, generator=g, method=method)
            label = f"SDE eps={args.eps:g} {method} {args.sde_steps}"
            rows.append((label, nfe, median_swd(x, n, 2000)))

    ls_learned, se_learned = held_out_score_loss(score_loss, sg_net, args.n_held_out, 10_000, 77)
    ls_exact, se_exact = held_out_score_loss(
        score_loss, exact_gaussian_score, args.n_held_out, 10_000, 77
    )
    ls_rel = abs(ls_learned - ls_exact) / abs(ls_exact)

    setup = f"{args.steps} steps, batch {args.batch}, MLP 4x256 ReLU, one-sided linear"
    print(f"\nCheckerboard, {setup}; n = {n}; SWD floor = {floor:.4f}\n")
    print("| network | train s | loss (last 500) |")
    print("|---|---|---|")
    for name, sec, loss in (("b checkerboard", b_sec, b_loss), ("s checkerboard", s_sec, s_loss),
                            ("s Gaussian", sg_sec, sg_loss)):  # fmt: skip
        print(f"| {name} | {sec:.0f} | {loss:.4f} |")
    print("\n| sampler | NFE (b and s calls) | SWD | / floor |")
    print("|---|---|---|---|")
    for label, nfe, value in rows:
        print(f"| {label} | {nfe} | {value:.4f} | {value / floor:.2f} |")
    print(
        f"\nHeld-out L_s on N(m, Sigma) ({args.n_held_out} examples, antithetic, t in [0, "
        f"{1 - DELTA}]): learned {ls_learned:.4f} +- {se_learned:.4f}, exact score "
        f"{ls_exact:.4f} +- {se_exact:.4f}, relative gap {ls_rel:.3f}"
    )
    ode = rows[0][2]
    sde = rows[2][2]  # Heun, the reference integrator
    checks = [
        ("SWD(ODE dopri5) <= 2.5 x floor", ode <= 2.5 * floor, ode / floor, 2.5),
        (f"SWD(SDE eps={args.eps:g}, Heun) <= 2.5 x floor", sde <= 2.5 * floor, sde / floor, 2.5),
        ("|L_s learned - L_s exact| / |L_s exact| <= 0.10", ls_rel <= 0.10, ls_rel, 0.10),
    ]
    print()
    for name, ok, value, threshold in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name} (measured {value:.3f}, threshold {threshold})")
    return 0 if all(ok for _, ok, _, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Card 17 toy-scale validation of the control-variate sliced Wasserstein estimators.

X ~ N(1, A A^T) with A = 0.3 randn(20, 20), Y ~ N(-0.5, 0.49 I), n = 1000, d = 20, fixed samples.
Ground truth SW_2^2 = plain Monte Carlo with L = 200 000 directions. Over 300 repetitions (fresh
directions, shared by the three estimators) at L = 10 and L = 100, checks

1. variance reduction: var(MC)/var(LCV) >= 5 and var(MC)/var(UCV) >= 4 at L = 10, both >= 50 at
   L = 100 (card 17's reference run: 8.1x / 6.3x and 107x / 80x);
2. bias: |mean(CV) - truth| / truth <= 5 % at L = 10 and <= 1 % at L = 100;
3. identity: X = Y gives 0 for every estimator; Y = X + c gives ||c||^2 / d exactly for LCV with
   alpha = 1 and ||c||^2/d + (mean G^)^3 / mean G^^2 with the estimated alpha^.

Prints a markdown table and PASS/FAIL per criterion; exits with status 1 if any check fails.
Run: python benchmarks/cv_sliced_wasserstein.py   (about a minute on one CPU core)
"""

from __future__ import annotations

import sys
import time

import torch

from flowforge.metrics.sliced import projected_w2, random_directions, sliced_wasserstein

D, N, REPS, TRUTH_L, CHUNK = 20, 1000, 300, 200_000, 4000
ESTIMATORS = ("none", "lower", "upper")
NAMES = {"none": "MC", "lower": "LCV", "upper": "UCV"}
THRESHOLDS = {  # L: (min var ratio LCV, min var ratio UCV, max relative bias)
    10: (5.0, 4.0, 0.05),
    100: (50.0, 50.0, 0.01),
}


def card_samples(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = 0.3 * torch.randn(D, D, generator=g, dtype=torch.float64)
    x = 1.0 + torch.randn(N, D, generator=g, dtype=torch.float64) @ a.T  # N(1, A A^T)
    y = -0.5 + 0.7 * torch.randn(N, D, generator=g, dtype=torch.float64)  # N(-0.5, 0.49 I)
    return x, y


def ground_truth(x: torch.Tensor, y: torch.Tensor, num: int, seed: int = 12345) -> float:
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, num, CHUNK):
        theta = random_directions(min(CHUNK, num - start), D, g, dtype=torch.float64)
        total += projected_w2(x, y, theta).sum().item()
    return total / num


def refined_truth(x: torch.Tensor, y: torch.Tensor) -> float:
    """A cross-check of the ground truth to ~0.03 % (not used for PASS/FAIL): E[W] = E[W - H] +
    E[H] with H the projected W2^2 of the Gaussian approximations (var(W - H) ~ 2e-6 vs
    var(W) ~ 8) and E[H] = (||dm||^2 + tr S1 + tr S2) / d - 2 E[sqrt(q1 q2)], q_i = theta' S_i
    theta, only the last term by Monte Carlo."""
    dm = x.mean(0) - y.mean(0)
    s1, s2 = torch.cov(x.T, correction=0), torch.cov(y.T, correction=0)

    def quad(theta):
        return (theta @ s1 * theta).sum(1), (theta @ s2 * theta).sum(1)

    theta = random_directions(4000, D, torch.Generator().manual_seed(7), dtype=torch.float64)
    q1, q2 = quad(theta)
    h = (theta @ dm).square() + (q1.sqrt() - q2.sqrt()).square()
    w = projected_w2(x, y, theta)
    big = random_directions(1_000_000, D, torch.Generator().manual_seed(8), dtype=torch.float64)
    q1, q2 = quad(big)
    mean_h = (dm @ dm + s1.trace() + s2.trace()) / D - 2 * (q1 * q2).sqrt().mean()
    return ((w - h).mean() + mean_h).item()


def repetitions(x: torch.Tensor, y: torch.Tensor, num_projections: int, reps: int) -> dict:
    out = {cv: [] for cv in ESTIMATORS}
    for r in range(reps):
        for cv in ESTIMATORS:  # same directions for the three estimators
            g = torch.Generator().manual_seed(10_000 + r)
            sw2 = sliced_wasserstein(x, y, num_projections, cv, generator=g, squared=True)
            out[cv].append(sw2.item())
    return {cv: torch.tensor(v, dtype=torch.float64) for cv, v in out.items()}


def identity_checks(x: torch.Tensor) -> list[tuple[str, float, str, bool]]:
    rows = []
    worst = max(
        abs(sliced_wasserstein(x, x, 10, cv, torch.Generator().manual_seed(0), True).item())
        for cv in ESTIMATORS
    )
    rows.append(("X = Y: max |estimate| (all three)", worst, "== 0", worst == 0.0))
    c = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)
    exact = c.square().sum().item() / D
    errs_one, errs_hat, rel_resid = [], [], []
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        one = sliced_wasserstein(x, x + c, 10, "lower", g, squared=True, alpha=1.0).item()
        errs_one.append(abs(one - exact) / exact)
        g = torch.Generator().manual_seed(seed)
        theta = random_directions(10, D, g, dtype=torch.float64)
        g_hat = (theta @ c).square() - exact
        predicted = exact + (g_hat.mean() ** 3 / g_hat.square().mean()).item()
        g = torch.Generator().manual_seed(seed)
        hat = sliced_wasserstein(x, x + c, 10, "lower", g, squared=True).item()
        errs_hat.append(abs(hat - predicted) / exact)
        rel_resid.append(abs(predicted - exact) / exact)
    rows.append(
        (
            "Y = X + c: LCV alpha=1, max rel. error vs ||c||^2/d",
            max(errs_one),
            "<= 1e-10",
            max(errs_one) <= 1e-10,
        )
    )
    rows.append(
        (
            "Y = X + c: LCV alpha^, max rel. error vs closed-form residual",
            max(errs_hat),
            "<= 1e-10",
            max(errs_hat) <= 1e-10,
        )
    )
    rows.append(
        (
            "Y = X + c: LCV alpha^, mean |residual| / (||c||^2/d)",
            sum(rel_resid) / len(rel_resid),
            "> 0.01 (not negligible)",
            sum(rel_resid) / len(rel_resid) > 0.01,
        )
    )
    return rows


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x, y = card_samples()
    truth = ground_truth(x, y, TRUTH_L)
    print(f"# Card 17 (CV-SW) validation: n = {N}, d = {D}, {REPS} repetitions")
    refined = refined_truth(x, y)
    print(f"\nground truth SW_2^2 (plain MC, L = {TRUTH_L}, the card's): {truth:.6f}")
    print(f"cross-check (Gaussian-approximation control variate, ~0.03 %): {refined:.6f}")
    print("(the table's bias uses the card's truth; 'bias*' uses the cross-check)\n")
    print("| L | estimator | mean SW_2^2 | rel. bias | bias* | variance | var(MC)/var(.) |")
    print("|---|---|---|---|---|---|---|")
    checks = []
    for num_projections, (min_lcv, min_ucv, max_bias) in THRESHOLDS.items():
        est = repetitions(x, y, num_projections, REPS)
        var_mc = est["none"].var().item()
        for cv in ESTIMATORS:
            mean, var = est[cv].mean().item(), est[cv].var().item()
            bias = (mean - truth) / truth
            print(
                f"| {num_projections} | {NAMES[cv]} | {mean:.6f} | {100 * bias:+.2f} % | "
                f"{100 * (mean - refined) / refined:+.2f} % | {var:.3e} | {var_mc / var:.1f} |"
            )
            if cv == "none":
                continue
            min_ratio = min_lcv if cv == "lower" else min_ucv
            checks.append(
                (
                    f"L={num_projections} var(MC)/var({NAMES[cv]})",
                    var_mc / var,
                    f">= {min_ratio:g}",
                    var_mc / var >= min_ratio,
                )
            )
            checks.append(
                (
                    f"L={num_projections} |bias({NAMES[cv]})|/truth",
                    abs(bias),
                    f"<= {max_bias:g}",
                    abs(bias) <= max_bias,
                )
            )
    checks += identity_checks(x)
    print("\n| criterion | measured | threshold | result |")
    print("|---|---|---|---|")
    for name, value, threshold, ok in checks:
        print(f"| {name} | {value:.4g} | {threshold} | {'PASS' if ok else 'FAIL'} |")
    print(f"\nelapsed {time.perf_counter() - t0:.1f} s")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

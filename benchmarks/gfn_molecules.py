"""Molecules token by token: a TB GFlowNet against a random policy and REINFORCE, by QED.

The environment is flowforge's ``SmilesBuilder`` (SMILES of up to ``--max-length`` tokens under
the grammar masks, R(x) = exp(beta QED(x)) where RDKit accepts the string, the per-token floor
elsewhere). Every method gets the same MLP policy (the same initial weights), batch, learning
rate, number of trajectories and seeds, repeats interleaved:

* ``random``: the untrained policy with uniform logits (uniform over the valid tokens);
* ``reinforce``: policy gradient on the score (QED, 0 where RDKit rejects the string) with an
  exponential-moving-average baseline, on-policy;
* ``reinforce_maxent`` (not in the default run): the same on the maximum-entropy reward
  r - lambda log P_F(tau) (``--entropy``), which keeps the policy from collapsing onto one
  string (``--methods reinforce_maxent --entropy L --name gfn_molecules_maxent_L`` wrote
  the tables for L = 0.001 and 0.005);
* ``gfn_tb``: trajectory balance (learned log Z at ``--log-z-lr``) on its own rollouts with
  epsilon ``--epsilon``;
* ``gfn_tb_moses``: the same with ``--offline`` of each batch drawn backward from MOSES training
  molecules that fit (the preset ``molecules_tb``).

Reported per method, median [min, max] over seeds: over all molecules generated in training
(``--trajectories`` of them), the mean QED of the 100 best distinct ones (canonical SMILES), their
Tanimoto diversity (1 - similarity of Morgan fingerprints, radius 2, averaged over pairs), and
the distinct molecules with QED >= ``--good``; and of ``--samples`` draws from the final policy,
validity, uniqueness and the mean QED of the valid ones. A GFlowNet is asked for a diverse set
of good molecules, REINFORCE for the single best: the two columns tell them apart.

Run (RDKit, the chem extra, and the molsets wheel's MOSES files; 21 minutes on 2 CPU cores
shared with other jobs):

    python benchmarks/gfn_molecules.py              # writes benchmarks/results/gfn_molecules.md
    python benchmarks/gfn_molecules.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from flowforge.data.smiles import canonical_smiles, moses_smiles, tanimoto_diversity
from flowforge.gfn import (
    MLPPolicy,
    PolicyConfig,
    SmilesBuilder,
    Trajectories,
    TrajectoryBalance,
    backward_trajectories,
    log_probs,
    sample_trajectories,
)

METHODS = ("random", "reinforce", "reinforce_maxent", "gfn_tb", "gfn_tb_moses")
DEFAULT_METHODS = ("random", "reinforce", "gfn_tb", "gfn_tb_moses")


class Seen:
    """The best QED of every distinct valid molecule generated so far (canonical SMILES)."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}

    def add(self, env: SmilesBuilder, x: torch.Tensor) -> np.ndarray:
        scores = env.scores(x).numpy()
        valid = ~np.isnan(scores)
        smiles = [s for s, v in zip(env.to_smiles(x), valid, strict=True) if v]
        for c, q in zip(canonical_smiles(smiles), scores[valid].tolist(), strict=True):
            if c is not None and q > self.best.get(c, -1.0):
                self.best[c] = q
        return scores

    def top(self, k: int) -> list[str]:
        return sorted(self.best, key=self.best.__getitem__, reverse=True)[:k]


def train(method: str, env: SmilesBuilder, init: dict, known: torch.Tensor, args, seed: int):
    """Train ``method`` for ``args.trajectories`` trajectories; returns (Seen, policy)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=args.hidden))
    policy.load_state_dict(init)
    seen = Seen()
    if method == "random":
        for p in policy.parameters():
            torch.nn.init.zeros_(p)
        for _ in range(args.trajectories // args.batch):
            seen.add(env, sample_trajectories(env, policy, args.batch, generator=g).last_states)
        return seen, policy
    weights = [p for n, p in policy.named_parameters() if n != "log_z"]
    groups = [{"params": weights, "lr": args.lr}]
    if method.startswith("gfn"):
        groups.append({"params": [policy.log_z], "lr": args.log_z_lr})
    opt = torch.optim.Adam(groups)
    tb, baseline = TrajectoryBalance(env), None
    n_off = round(args.offline * args.batch) if method == "gfn_tb_moses" else 0
    for _ in range(args.trajectories // args.batch):
        if method.startswith("reinforce"):
            traj = sample_trajectories(env, policy, args.batch, generator=g)
            scores = torch.from_numpy(np.nan_to_num(seen.add(env, traj.last_states), nan=0.0))
            log_pf = _log_pf(env, policy, traj)
            if method == "reinforce_maxent":  # maximum entropy: r - lambda log P_F(tau)
                scores = scores.to(log_pf) - args.entropy * log_pf.detach()
            mean = scores.mean().item()
            baseline = mean if baseline is None else 0.9 * baseline + 0.1 * mean
            loss = -((scores.to(log_pf) - baseline) * log_pf).mean()
        else:
            fresh = sample_trajectories(env, policy, args.batch - n_off, epsilon=args.epsilon,
                                        generator=g)  # fmt: skip
            seen.add(env, fresh.last_states)
            traj = fresh
            if n_off:
                idx = torch.randint(len(known), (n_off,), generator=g)
                traj = Trajectories.cat([fresh, backward_trajectories(env, policy, known[idx])])
            loss = tb(policy, traj).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        opt.step()
    return seen, policy


def _log_pf(env: SmilesBuilder, policy: MLPPolicy, traj: Trajectories) -> torch.Tensor:
    """(B,) sum of log P_F along the trajectories, with gradients."""
    T, B = traj.actions.shape
    flat = traj.states[:-1].reshape(T * B, -1)
    lpf, _, _ = log_probs(env, policy, flat)
    a = traj.actions.reshape(T * B).clamp(min=0)
    picked = lpf.gather(1, a[:, None]).squeeze(1).reshape(T, B)
    return picked.masked_fill(~traj.valid, 0.0).sum(0)


def evaluate(env: SmilesBuilder, seen: Seen, policy: MLPPolicy, args, seed: int) -> dict:
    top = seen.top(100)
    g = torch.Generator().manual_seed(10_000 + seed)
    x = sample_trajectories(env, policy, args.samples, generator=g).last_states
    scores = env.scores(x).numpy()
    valid = ~np.isnan(scores)
    valid_smiles = [s for s, v in zip(env.to_smiles(x), valid, strict=True) if v]
    distinct = {c for c in canonical_smiles(valid_smiles) if c}
    return {
        "top100_qed": float(np.mean([seen.best[c] for c in top])) if top else float("nan"),
        "top100_diversity": tanimoto_diversity(top),
        "good": sum(q >= args.good for q in seen.best.values()),
        "validity": float(valid.mean()),
        "uniqueness": len(distinct) / max(1, int(valid.sum())),
        "sample_qed": float(scores[valid].mean()) if valid.any() else float("nan"),
    }


def _stats(values: list[float], digits: int = 3) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trajectories", type=int, default=102400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--beta", type=float, default=8.0)
    parser.add_argument("--log-floor", type=float, default=-4.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log-z-lr", type=float, default=0.1)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--offline", type=float, default=0.25)
    parser.add_argument("--grad-clip", type=float, default=10.0)
    parser.add_argument("--training-smiles", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--entropy", type=float, default=0.005, help="reinforce_maxent: lambda")
    parser.add_argument("--name", default="gfn_molecules", help="results file name (no suffix)")
    parser.add_argument("--good", type=float, default=0.8, help="QED of a good molecule")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trajectories, args.repeats, args.samples = 640, 1, 200
        args.out = Path("runs/gfn_molecules_quick")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    t0 = time.perf_counter()
    env = SmilesBuilder(args.max_length, "qed", args.beta, args.log_floor)
    x = env.from_smiles(moses_smiles("train", limit=args.training_smiles), strict=False)
    known = x[env.fits(x)]
    print(f"{len(known)} MOSES training molecules fit {args.max_length} tokens")
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in range(args.repeats):
        torch.manual_seed(seed)
        init = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=args.hidden))
        init = {k: v.clone() for k, v in init.state_dict().items()}
        for method in args.methods:  # interleaved
            t = time.perf_counter()
            seen, policy = train(method, env, init, known, args, seed)
            row = evaluate(env, seen, policy, args, seed)
            row["seconds"] = time.perf_counter() - t
            rows[method].append(row)
            print(seed, method, {k: round(v, 3) for k, v in row.items()}, flush=True)
    reference = evaluate_known(env, known, args)
    write(rows, reference, args, len(known), time.perf_counter() - t0)


def evaluate_known(env: SmilesBuilder, known: torch.Tensor, args) -> dict:
    """The same top-100 figures over as many MOSES training molecules as trajectories."""
    seen = Seen()
    g = torch.Generator().manual_seed(0)
    seen.add(env, known[torch.randint(len(known), (min(args.trajectories, len(known)),),
                                      generator=g)])  # fmt: skip
    top = seen.top(100)
    return {"top100_qed": float(np.mean([seen.best[c] for c in top])),
            "top100_diversity": tanimoto_diversity(top),
            "good": sum(q >= args.good for q in seen.best.values())}  # fmt: skip


def write(rows: dict, reference: dict, args, n_known: int, seconds: float) -> None:
    import rdkit

    args.out.mkdir(parents=True, exist_ok=True)
    names = {
        "random": "random policy (uniform valid tokens)",
        "reinforce": "REINFORCE",
        "reinforce_maxent": f"REINFORCE, entropy bonus {args.entropy:g}",
        "gfn_tb": "GFlowNet TB",
        "gfn_tb_moses": f"GFlowNet TB + {args.offline:.0%} MOSES",
    }
    lines = [
        "# GFlowNets on molecules: TB against a random policy and REINFORCE (QED)",
        "",
        "`python benchmarks/gfn_molecules.py`",
        "",
        f"{platform.machine()} CPU, torch {torch.__version__}, RDKit {rdkit.__version__}, 1 "
        f"thread, {seconds / 60:.1f} min. SMILES of up to {args.max_length} tokens, R = exp("
        f"{args.beta:g} QED), rejected strings log R = {args.log_floor:g} - |x| log V; 2 x "
        f"{args.hidden} MLP policy (the same initial weights for every method), batch "
        f"{args.batch}, Adam lr {args.lr:g} (TB log Z {args.log_z_lr:g}), gradient clip "
        f"{args.grad_clip:g}, GFlowNet epsilon {args.epsilon:g}; {args.trajectories} "
        f"trajectories per method; {args.repeats} interleaved seeds, median [min, max]. "
        f"{n_known} of the first {args.training_smiles} MOSES training molecules fit the "
        "environment.",
        "",
        f"| method | top-100 QED | top-100 diversity | distinct QED >= {args.good:g} | "
        "final validity | final uniqueness | final mean QED | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, rs in rows.items():
        cells = [_stats([r[k] for r in rs]) for k in ("top100_qed", "top100_diversity")]
        cells.append(_stats([r["good"] for r in rs], 0))
        cells += [_stats([r[k] for r in rs]) for k in ("validity", "uniqueness", "sample_qed")]
        cells.append(f"{statistics.median(r['seconds'] for r in rs) / 60:.1f}")
        lines.append(f"| {names[m]} | " + " | ".join(cells) + " |")
    lines.append(
        f"| ({min(args.trajectories, n_known)} MOSES training molecules) | "
        f"{reference['top100_qed']:.3f} | {reference['top100_diversity']:.3f} | "
        f"{reference['good']} | | | | |"
    )
    lines += [
        "",
        "Top-100 columns: over all molecules generated during training (distinct canonical "
        "SMILES). Final columns: draws of the trained policy (no exploration).",
    ]
    path = args.out / f"{args.name}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""TARFlow in pixels vs STARFlow in latents on the digits, beside flow matching; Jacobi vs
sequential decoding.

Runs (the presets, through ``flowforge.fit``, into ``--out``):

    tarflow 8x8     digits_tarflow                      bits/dim of the 17 grey levels
    tarflow 16x16   digits_tarflow, data.image_size=16  (``--sizes 8 16``) NLL/dim only: the
                    upsampled digits are not on a grid
    starflow        digits_starflow on the digits_ae latents (the autoencoder trained first, or
                    ``--ae-run``): NLL/dim of the latents
    fm              the ``digits`` preset (or ``--fm-run``): the sample-quality reference

Each flow is evaluated with and without guidance (``--guidance``, sequential decoding): Frechet
distance, precision/recall and class accuracy in the run's feature classifier, as the CLI
reports them. Then sequential and Jacobi decoding of the 8x8 TARFlow draw the same 1000 samples
from the same noise, interleaved over ``--repeats``: wall time (median), transformer passes, the
largest difference between the two and both FDs (target: Jacobi >= 2.5x faster at equal FD).

    python benchmarks/nf_images.py                     # ~30 min on 2 cores
    python benchmarks/nf_images.py --quick             # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from flowforge.recipes.fitting import fit
from flowforge.recipes.run import load

RESULTS = Path(__file__).resolve().parent / "results"


def _fit(preset: str, run_dir: Path, args, *overrides: str):
    common = [f"threads={args.threads}", "train.progress=false"]
    if args.steps:
        common.append(f"train.steps={args.steps}")
    if args.quick:
        common += ["train.steps=20", "eval.n_samples=100", "eval.classifier_steps=50"]
    return fit(preset, *common, *overrides, run_dir=run_dir)


def _row(name: str, run, guidance: float) -> dict:
    run.config.sample.guidance = guidance
    s = run.config.sample
    m = run.evaluate(solvers=[s.solver], nfes=[s.nfe], write=False)
    row = dict(m["results"][0])
    like = m.get("likelihood", {})
    return {
        "run": name,
        "guidance": guidance,
        "fd": row.get("fd"),
        "precision": row.get("precision"),
        "recall": row.get("recall"),
        "accuracy": row.get("accuracy"),
        "nfe": row.get("nfe"),
        "nll_per_dim": like.get("nll_per_dim"),
        "bits_per_dim": like.get("bits_per_dim"),
        "floor": m["floors"].get("fd"),
    }


def _decoders(run, n: int, repeats: int) -> dict:
    """Sequential vs Jacobi on the same noise: median seconds, passes, max difference."""
    net = run.ema
    m = run.config.method
    z = torch.randn(n, *run.data.shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % run.data.num_classes
    kinds = {
        "sequential": dict(block_size=1),
        "jacobi": dict(block_size=m.jacobi_block, max_iter=m.jacobi_max_iter, tol=m.jacobi_tol),
    }
    times, outs = {k: [] for k in kinds}, {}
    for r in range(repeats):
        for k in list(kinds)[r % 2 :] + list(kinds)[: r % 2]:
            t = time.perf_counter()
            with torch.no_grad():
                outs[k] = net.decode(z, labels, **kinds[k])
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = (outs["jacobi"].x - outs["sequential"].x).abs().max().item()
    return {
        "seconds": med,
        "passes": {k: o.passes for k, o in outs.items()},
        "speedup": med["sequential"] / med["jacobi"],
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_nf_images"))
    p.add_argument("--sizes", type=int, nargs="+", default=[8])
    p.add_argument("--steps", type=int, default=None, help="override every preset's steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--ae-run", type=Path, default=None)
    p.add_argument("--fm-run", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    rows, runs = [], {}
    for size in args.sizes:
        extra = [] if size == 8 else ["data.image_size=16", "method.bits_grid=null"]
        runs[f"tarflow {size}x{size}"] = _fit("digits_tarflow", out / f"tarflow{size}", args,
                                              *extra)  # fmt: skip
    ae = args.ae_run or out / "digits_ae"
    if args.ae_run is None:
        _fit("digits_ae", ae, args)
    runs["starflow (latents)"] = _fit("digits_starflow", out / "starflow", args,
                                      f"data.autoencoder={ae}")  # fmt: skip
    fm = args.fm_run or out / "digits"
    if args.fm_run is None:
        _fit("digits", fm, args)
    for name, run in runs.items():
        run = load(run.run_dir)
        for w in (1.0, args.guidance):
            rows.append(_row(name, run, w))
            print(rows[-1], flush=True)
    fm_run = load(fm)
    fm_row = _row("fm digits (heun 16)", fm_run, 1.0)
    rows.append(fm_row)
    n_dec = 100 if args.quick else 1000
    dec = _decoders(load(runs["tarflow 8x8"].run_dir), n_dec, args.repeats)
    small = _decoders(load(runs["tarflow 8x8"].run_dir), 16, args.repeats)
    lines = [
        "| run | guidance | NFE | FD | floor | precision | recall | accuracy | NLL/dim | bits/dim "
        "|",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda v, p=4: "-" if v is None else f"{v:.{p}g}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['guidance']:g} | {r['nfe']} | {f(r['fd'])} | {f(r['floor'])} | "
            f"{f(r['precision'], 3)} | {f(r['recall'], 3)} | {f(r['accuracy'], 3)} | "
            f"{f(r['nll_per_dim'])} | {f(r['bits_per_dim'])} |"
        )
    s = dec["seconds"]
    fd_seq = next(r["fd"] for r in rows if r["run"] == "tarflow 8x8" and r["guidance"] == 1)
    jac_run = load(runs["tarflow 8x8"].run_dir)
    jac_run.config.sample.solver = "jacobi"
    fd_jac = _row("jacobi", jac_run, 1.0)["fd"]
    lines += [
        "",
        f"decoding {n_dec} samples of tarflow 8x8 (same noise, median of {args.repeats}): "
        f"sequential {s['sequential']:.2f} s ({dec['passes']['sequential']} passes), jacobi "
        f"{s['jacobi']:.2f} s ({dec['passes']['jacobi']} passes): {dec['speedup']:.2f}x "
        f"(target >= 2.5x: {'PASS' if dec['speedup'] >= 2.5 else 'FAIL'}); max |x_jac - x_seq| "
        f"{dec['max_abs_diff']:.2g}; FD sequential {fd_seq:.4g}, jacobi {fd_jac:.4g}",
        f"a batch of 16: sequential {small['seconds']['sequential'] * 1e3:.1f} ms, jacobi "
        f"{small['seconds']['jacobi'] * 1e3:.1f} ms: {small['speedup']:.2f}x",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        cmd = "python benchmarks/nf_images.py " + " ".join(sys.argv[1:] if argv is None else argv)
        (RESULTS / "nf_images.md").write_text(f"# {cmd.strip()}\n\n{text}\n")
        record = {"rows": rows, "decoding": dec, "decoding_16": small}
        (RESULTS / "nf_images.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

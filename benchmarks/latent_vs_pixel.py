"""Card 01 (LFM): Frechet distance against training wall-clock, latent vs pixel, 16x16 digits.

Two class-conditional UNet flows (flowforge's ``digits`` and ``digits_latent`` presets) on the
same 16x16 scikit-learn digits, with the same batch, learning rate, warm-up and CFG dropout:

    pixel    UNet on 1x16x16 pixels               (digits preset, data.image_size=16)
    latent   UNet on the 4x4x4 latents of a VAE   (digits_latent preset; the VAE is the
             digits_ae preset, trained first here; its wall-clock is charged to the latent
             model in the "latent + AE" column)

Both are trained in segments (``fit`` called again with a larger ``train.steps`` on
the same run directory; a resumed run continues exactly) and the segments of the two models are
interleaved (pixel 1, latent 1, pixel 2, ...) so load from other processes hits both alike. Only
the ``fit`` calls are timed (they include building the data, ~1 s each: the latent
run refits its codec every call). After each segment the EMA network is evaluated: Frechet
distance in the features of ONE feature classifier (trained once, copied into both run
directories) between all held-out digits and as many samples (Heun, NFE 16, labels drawn with
the training frequencies, fixed seed). The floor is the same distance between training and
held-out digits; the floor through the AE replaces the training digits by their reconstructions
(encoded to a posterior sample, decoded): the best FD the latent model can reach with that AE.

Deviations from the presets, the same for both models: constant learning rate after the
warm-up (the cosine schedule is stretched to ``train.steps``, so segments would not add up to
one run) and EMA decay 0.99 (0.999 needs ~1500 steps to forget the initial weights, longer than
the first segments). The autoencoder trains 1500 steps (``--ae-steps``; the preset's 3000 do
not fit the time budget). The global RNG is seeded before every call so the latent run's
codec, which ``fit`` refits from posterior samples on each call, is the same in every
segment.

Reported: (model, step, train seconds, FD) per segment; the FD both reach (the larger of the
two final FDs) and the seconds each needed to first get at or below it, with and without the
autoencoder's time; seconds per step and their ratio. Plot: FD against seconds (log y).

Run:
    python benchmarks/latent_vs_pixel.py            # full run, 15 to 25 minutes on 2 shared cores
    python benchmarks/latent_vs_pixel.py --quick    # smoke run, under 2 minutes
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from flowforge.metrics.frechet import frechet_distance  # noqa: E402
from flowforge.recipes.config import RunConfig  # noqa: E402
from flowforge.recipes.config_io import apply_overrides, load_yaml, preset_path  # noqa: E402
from flowforge.recipes.fitting import fit  # noqa: E402
from flowforge.recipes.image_eval import CLASSIFIER_FILE, feature_classifier  # noqa: E402
from flowforge.recipes.images import CODEC_FILE, build_images  # noqa: E402
from flowforge.recipes.run import load  # noqa: E402
from flowforge.recipes.table import recipe_for  # noqa: E402

NAME = "latent_vs_pixel"
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("pixel", "latent")


def configs(args: argparse.Namespace, out: Path) -> dict[str, RunConfig]:
    """The autoencoder, pixel and latent run configs (steps are set per segment)."""
    shared = [
        f"--threads={args.threads}",
        f"--train.ema_decay={args.ema}",
        "--train.schedule=constant",
        f"--train.warmup_steps={args.warmup}",
        f"--train.seed={args.seed}",
        "--train.ckpt_every=1000000",  # only the final checkpoint of each segment
        "--train.progress=false",
        "--eval.metrics=fd",
        "--eval.solvers=heun",
        f"--eval.nfes={args.nfe}",
        "--eval.n_samples=100000",  # capped at the held-out set: all 359 digits
        f"--eval.classifier_steps={args.classifier_steps}",
    ]
    ae = apply_overrides(
        load_yaml(preset_path("digits_ae")),
        [
            f"--threads={args.threads}",
            f"--train.steps={args.ae_steps}",
            f"--train.warmup_steps={min(100, args.ae_steps // 2)}",
            "--train.progress=false",
        ],
    )
    pixel = apply_overrides(
        load_yaml(preset_path("digits")), ["--name=pixel", "--data.image_size=16", *shared]
    )
    latent = apply_overrides(
        load_yaml(preset_path("digits_latent")),
        ["--name=latent", f"--data.autoencoder={out / 'ae'}", *shared],
    )
    return {"ae": ae, "pixel": pixel, "latent": latent}


def timed_train(config: RunConfig, run_dir: Path, steps: int, seed: int) -> float:
    """Train ``run_dir`` up to ``steps`` (resuming); returns the wall-clock seconds."""
    config = apply_overrides(config, [f"--train.steps={steps}"])
    torch.manual_seed(seed)  # the latent run refits its codec from posterior samples each call
    t0 = time.perf_counter()
    fit(config, run_dir=run_dir, evaluate=False)
    return time.perf_counter() - t0


def load_image_run(run_dir: Path):
    """(data, EMA network) of a trained run."""
    run = load(run_dir)
    return run.data, run.net()


def fd_of(config: RunConfig, run_dir: Path, step: int) -> tuple[float, float]:
    """(FD of the EMA network at Heun NFE ``eval.nfes``, the train-vs-held-out floor)."""
    config = apply_overrides(config, [f"--train.steps={step}"])
    data, net = load_image_run(run_dir)
    m = recipe_for(config).evaluate(net, data, run_dir, step, progress=False)
    assert m["n_samples"] == len(data.test_x), "the FD must use every held-out digit"
    return float(m["results"][0]["fd"]), float(m["floors"]["fd"])


@torch.no_grad()
def ae_floor(classifier, run_dir: Path, config: RunConfig) -> float:
    """FD between held-out digits and AE reconstructions of as many training digits, picked
    as ``evaluate_images`` picks the training digits of its floor."""
    data, _ = load_image_run(run_dir)
    n = len(data.test_x)
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(
        config.eval.seed))[:n]  # fmt: skip
    z = data.codec.encode(data.train_x[idx], generator=torch.Generator().manual_seed(0))
    real = classifier.features(data.test_x.float())
    return frechet_distance(real, classifier.features(data.decode(z).float()))


def first_time_at(rows: list[dict], target: float, offset: float = 0.0) -> float | None:
    """Cumulative seconds (plus ``offset``) at the first segment whose FD <= target."""
    for r in rows:
        if r["fd"] <= target:
            return r["seconds"] + offset
    return None


def plot(
    rows: dict[str, list[dict]],
    ae_seconds: float,
    target: float,
    floor: float,
    floor_ae: float,
    nfe: int,
    path: Path,
) -> None:
    """FD against cumulative seconds (pixel, latent, latent + AE) and against steps."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    curves = [
        ("pixel (1x16x16)", rows["pixel"], 0.0, "C0", "-"),
        ("latent (4x4x4), flow only", rows["latent"], 0.0, "C1", "--"),
        ("latent + AE training", rows["latent"], ae_seconds, "C1", "-"),
    ]
    for label, rs, offset, color, ls in curves:
        axes[0].plot(
            [r["seconds"] + offset for r in rs], [r["fd"] for r in rs], ls, marker="o",
            color=color, label=label, ms=4,
        )  # fmt: skip
    for name, color in (("pixel", "C0"), ("latent", "C1")):
        rs = rows[name]
        axes[1].plot([r["step"] for r in rs], [r["fd"] for r in rs], marker="o", color=color,
                     label=name, ms=4)  # fmt: skip
    for ax in axes:
        ax.axhline(target, color="grey", ls=":", lw=1, label=f"common FD {target:.2f}")
        ax.axhline(floor, color="black", ls="--", lw=1, label=f"floor {floor:.2f}")
        ax.axhline(floor_ae, color="C1", ls=":", lw=1, label=f"floor through AE {floor_ae:.2f}")
        ax.set_yscale("log")
        ax.set_ylabel(f"FD (classifier features), Heun NFE {nfe}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_xlabel("training wall-clock (s, 1 thread)")
    axes[1].set_xlabel("training step")
    axes[0].legend(fontsize=7)
    axes[0].set_title("FD vs seconds")
    axes[1].set_title("FD vs steps")
    fig.suptitle("Latent vs pixel flow matching, class-conditional 16x16 digits")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out-dir",
        default=None,
        help="fresh directory for the runs (default: a new /tmp/bench_latent_vs_"
        "pixel_* directory)",
    )
    p.add_argument(
        "--results",
        default=None,
        help="where the .md and .png go (default benchmarks/results; --out-dir with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run (tiny settings, < 2 min)")
    p.add_argument(
        "--segments",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[100, 200, 400, 600, 800],
        help="cumulative steps at which both models are evaluated (100,200,400,600,800)",
    )
    p.add_argument(
        "--ae-steps", type=int, default=1500, help="autoencoder steps (1500; the preset has 3000)"
    )
    p.add_argument("--ema", type=float, default=0.99, help="EMA decay of both flows (0.99)")
    p.add_argument("--warmup", type=int, default=100, help="LR warm-up steps (100, presets)")
    p.add_argument("--nfe", type=int, default=16, help="Heun NFE of the FD samples (16)")
    p.add_argument(
        "--classifier-steps",
        type=int,
        default=1500,
        help="steps of the shared feature classifier (1500, CLI default)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = p.parse_args(argv)
    if args.quick:
        args.segments, args.ae_steps, args.warmup = [10, 20], 20, 5
        args.nfe, args.classifier_steps = 4, 50
    if sorted(set(args.segments)) != args.segments or args.segments[0] < args.warmup:
        p.error(
            f"--segments={args.segments} must increase and start at or after "
            f"--warmup={args.warmup}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out_dir is None:
        out = Path(tempfile.mkdtemp(prefix=f"bench_{NAME}_", dir="/tmp"))
    else:
        out = Path(args.out_dir)
        if out.exists() and any(out.iterdir()):
            print(f"--out-dir={out} is not empty; pass a fresh directory.", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results) if args.results else (out if args.quick else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    cfg = configs(args, out)
    dirs = {"ae": out / "ae", "pixel": out / "pixel", "latent": out / "latent"}
    print(f"runs in {out}; results to {results}", flush=True)

    # 1. The autoencoder (charged to the latent model).
    print(f"[ae] training {args.ae_steps} steps", flush=True)
    ae_seconds = timed_train(cfg["ae"], dirs["ae"], args.ae_steps, args.seed)
    ae_data, ae_net = load_image_run(dirs["ae"])
    ae_mse = recipe_for(cfg["ae"]).evaluate(ae_net, ae_data, None, args.ae_steps)[
        "reconstruction_mse"
    ]
    print(f"[ae] {ae_seconds:.1f} s, held-out reconstruction MSE {ae_mse:.4f}", flush=True)

    # 2. One feature classifier for both FDs (same 16x16 training digits for both runs).
    pixel_data = build_images(cfg["pixel"])
    t0 = time.perf_counter()
    classifier = feature_classifier(out, pixel_data, args.classifier_steps, cfg["pixel"].eval.seed)
    print(f"[classifier] trained in {time.perf_counter() - t0:.1f} s", flush=True)
    for name in MODELS:
        dirs[name].mkdir()
        shutil.copy(out / CLASSIFIER_FILE, dirs[name] / CLASSIFIER_FILE)

    # 3. Interleaved segments.
    rows: dict[str, list[dict]] = {name: [] for name in MODELS}
    total = {name: 0.0 for name in MODELS}
    floor = None
    codec_state = None
    for step in args.segments:
        for name in MODELS:
            seconds = timed_train(cfg[name], dirs[name], step, args.seed)
            total[name] += seconds
            fd, floor = fd_of(cfg[name], dirs[name], step)
            rows[name].append({"step": step, "seconds": total[name], "fd": fd})
            print(f"[{name}] step {step}: segment {seconds:.1f} s, total {total[name]:.1f} s, "
                  f"FD {fd:.3f} (floor {floor:.3f})", flush=True)  # fmt: skip
        codec = load_file(dirs["latent"] / CODEC_FILE)
        if codec_state is not None:  # the codec refitted on resume must not drift
            assert all(torch.equal(codec[k], codec_state[k]) for k in codec), "codec changed"
        codec_state = codec

    # 4. Summary.
    params = {}
    for name in MODELS:
        data, net = load_image_run(dirs[name])
        params[name] = (sum(p.numel() for p in net.parameters()), "x".join(map(str, data.shape)))
    floor_ae = ae_floor(classifier, dirs["latent"], cfg["latent"])
    target = max(rows["pixel"][-1]["fd"], rows["latent"][-1]["fd"])
    reach = {
        "pixel": first_time_at(rows["pixel"], target),
        "latent": first_time_at(rows["latent"], target),
        "latent + AE": first_time_at(rows["latent"], target, ae_seconds),
    }
    per_step = {name: total[name] / args.segments[-1] for name in MODELS}
    command = "python benchmarks/latent_vs_pixel.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    md = [
        "# Latent vs pixel flow matching on 16x16 digits (card 01)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
        "shared 2-core host, so seconds carry load noise (segments interleaved).",
        "",
        f"Setup: class-conditional UNets (digits / digits_latent presets), batch "
        f"{cfg['pixel'].train.batch_size}, lr {cfg['pixel'].train.lr} constant after "
        f"{args.warmup} warm-up steps, EMA {args.ema} (both), CFG dropout "
        f"{cfg['pixel'].method.cond_dropout}. pixel: {params['pixel'][0]:,} parameters on "
        f"{params['pixel'][1]}; latent: {params['latent'][0]:,} parameters on "
        f"{params['latent'][1]} latents of a VAE trained {args.ae_steps} steps in "
        f"{ae_seconds:.0f} s (held-out reconstruction MSE {ae_mse:.4f}). FD: classifier "
        f"features (one classifier for both), all {len(pixel_data.test_x)} held-out digits vs "
        f"as many samples, Heun NFE {args.nfe}, fixed seed; floor (train vs held-out) "
        f"{floor:.3f}; floor through the AE (reconstructed train vs held-out) {floor_ae:.3f}.",
        "",
        "| model | step | train s (cumulative) | train s incl. AE | FD |",
        "|---|---|---|---|---|",
    ]
    for name in MODELS:
        for r in rows[name]:
            with_ae = r["seconds"] + (ae_seconds if name == "latent" else 0.0)
            md.append(f"| {name} | {r['step']} | {r['seconds']:.1f} | {with_ae:.1f} | "
                      f"{r['fd']:.3f} |")  # fmt: skip
    md += [
        "",
        f"Common FD (the larger final FD): **{target:.3f}**. Seconds to first reach it:",
        "",
        "| model | seconds to FD <= common | ms per step |",
        "|---|---|---|",
    ]
    for name, sec in reach.items():
        ms = per_step["pixel" if name == "pixel" else "latent"] * 1e3
        shown = "not reached" if sec is None else f"{sec:.1f}"
        md.append(f"| {name} | {shown} | {ms:.1f} |")
    ratio = per_step["pixel"] / per_step["latent"]
    md += [
        "",
        f"Per-step time ratio pixel / latent: **{ratio:.2f}** "
        f"({per_step['pixel'] * 1e3:.1f} ms vs {per_step['latent'] * 1e3:.1f} ms per step, "
        "segment overheads included).",
    ]
    if reach["pixel"] and reach["latent"]:
        md.append(
            f"Time to the common FD, pixel / latent: {reach['pixel'] / reach['latent']:.2f} "
            f"(flow only), {reach['pixel'] / reach['latent + AE']:.2f} (latent + AE)."
        )
    text = "\n".join(md) + "\n"
    print("\n" + text)
    (results / f"{NAME}.md").write_text(text)
    plot(rows, ae_seconds, target, floor, floor_ae, args.nfe, results / f"{NAME}.png")
    print(f"wrote {results / (NAME + '.md')} and {results / (NAME + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""STARFlow-V on moving shapes: frame quality and temporal consistency with and without the
denoiser, image-to-video, and Jacobi vs frame-by-frame decoding.

One run of the ``video_starflow`` preset (trained here, or ``--run``): a video flow with a
causal denoiser trained by flow-score matching. Its EMA weights draw ``--n`` videos per label
mix from one noise, decoded once and then finished three ways:

    raw        the flow's samples of noisy videos (no denoising)
    score      one Tweedie step x + sigma^2 grad log p(x) (a backward pass through the flow)
    causal     the learned causal denoiser (one forward pass, frames see only their past)

For each: per-frame FD in the run's frame classifier (floor: held-out vs training videos), the
displacement error of the shapes' centroids against the label's velocity (pixels per frame)
and the share of videos moving the label's way. Image-to-video: the first frame of held-out
videos given, the rest sampled from the exact conditional (their labels), scored by the
centroid's distance per frame from the held-out video's own. Decoding: frame-by-frame vs Jacobi
(``--jacobi-frames`` frames per chunk, started from the previous frame) on the same noise,
interleaved over ``--repeats`` (median wall time, passes, largest difference).

    python benchmarks/nf_video.py                 # trains the preset (~15 min), then ~2 min
    python benchmarks/nf_video.py --run runs/video_starflow
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from flowforge.data.videos import centroids, motion_error
from flowforge.metrics.frechet import frechet_distance
from flowforge.nf import score_denoise
from flowforge.recipes.fitting import fit
from flowforge.recipes.run import load
from flowforge.recipes.videos import frame_classifier, frame_features

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, default=None, help="a trained video_starflow run")
    p.add_argument("--out", type=Path, default=Path("runs/bench_nf_video"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale (1: none)")
    p.add_argument("--jacobi-frames", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run is None:
        over = [f"threads={args.threads}", "train.progress=false"]
        if args.steps:
            over.append(f"train.steps={args.steps}")
        if args.quick:
            over += ["train.steps=20", "eval.n_samples=32", "eval.classifier_steps=20"]
        args.run = fit("video_starflow", *over, run_dir=args.out / "video_starflow").run_dir
    if args.quick:
        args.n = 32
    run = load(args.run)
    model = run.ema if run.ema is not None else run.model
    flow = model.flow  # the VideoFlow inside DenoisedFlow
    m, data = run.config.method, run.data
    n = min(args.n, len(data.test_x))
    clf = frame_classifier(run.run_dir, data, run.config.eval.classifier_steps, 0)
    real = frame_features(clf, data.test_x[:n])[0]
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[:n]
    floor_fd = frechet_distance(frame_features(clf, data.train_x[idx])[0], real)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, *data.shape, generator=g)
    labels = data.test_labels[:n] if data.num_classes else None
    w = max(args.guidance - 1, 0.0)

    def decode(**kw):
        with torch.no_grad():
            return flow.decode(z, labels, guidance=w, rule=m.guidance_rule, **kw)

    raw = decode().x
    finished = {
        "raw": raw,
        "score": score_denoise(flow, raw, m.noise_std, labels),
        "causal": model.denoise(raw).detach(),
    }
    lines = [
        f"run {run.run_dir} (step {run.step}), {n} videos of {tuple(data.shape)}, guidance "
        f"{args.guidance:g}; per-frame FD floor {floor_fd:.4g}",
        "",
        "| samples | per-frame FD | displacement error (px/frame) | direction accuracy |",
        "|---|---|---|---|",
    ]
    record: dict = {"floor_fd": floor_fd, "rows": {}}
    truth = motion_error(data.test_x[:n], data.test_labels[:n])
    lines.append(
        f"| held-out videos | {floor_fd:.4g} (floor) | {truth['displacement_error']:.3f} | "
        f"{truth['direction_accuracy']:.3f} |"
    )
    for name, x in finished.items():
        x = x.clamp(-1, 1)
        fd = frechet_distance(real, frame_features(clf, x)[0])
        mot = motion_error(x, labels) if labels is not None else motion_error(x)
        record["rows"][name] = {"fd": fd, **mot}
        acc = mot.get("direction_accuracy")
        lines.append(
            f"| {name} | {fd:.4g} | {mot['displacement_error']:.3f} | "
            f"{'-' if acc is None else f'{acc:.3f}'} |"
        )
    # image-to-video: the first frame of held-out videos, their labels
    first = data.test_x[:n, :1]
    with torch.no_grad():
        cont = flow.decode(z, labels, guidance=w, rule=m.guidance_rule, known=first).x
    cont = model.denoise(cont).detach().clamp(-1, 1)
    cont[:, :1] = first
    err = (centroids(cont) - centroids(data.test_x[:n])).norm(dim=-1)  # (n, F)
    per_frame = [round(v, 2) for v in err.mean(0).tolist()]
    fd_cont = frechet_distance(real, frame_features(clf, cont)[0])
    record["image_to_video"] = {"centroid_error_per_frame": per_frame, "fd": fd_cont}
    lines += [
        "",
        f"image-to-video (first held-out frame given, causal denoiser): per-frame FD "
        f"{fd_cont:.4g}; centroid distance from the held-out video's per frame (px) {per_frame}",
    ]
    # decoding speed
    kinds = {
        "sequential": dict(),
        "jacobi": dict(
            frame_block=args.jacobi_frames,
            token_block=m.jacobi_block,
            max_iter=m.jacobi_max_iter,
            tol=m.jacobi_tol,
        ),  # fmt: skip
    }
    times, outs = {k: [] for k in kinds}, {}
    for r in range(args.repeats):
        for k in list(kinds)[r % 2 :] + list(kinds)[: r % 2]:
            t = time.perf_counter()
            outs[k] = decode(**kinds[k])
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = (outs["jacobi"].x - outs["sequential"].x).abs().max().item()
    jac_fd = frechet_distance(real, frame_features(clf, model.denoise(outs["jacobi"].x)
                                                    .detach().clamp(-1, 1))[0])  # fmt: skip
    speed = med["sequential"] / med["jacobi"]
    passes = {k: o.passes for k, o in outs.items()}
    record["decoding"] = dict(seconds=med, speedup=speed, max_abs_diff=diff, passes=passes,
                              fd_jacobi=jac_fd)  # fmt: skip
    lines.append(
        f"decoding {n} videos (median of {args.repeats}): frame by frame {med['sequential']:.2f}"
        f" s ({outs['sequential'].passes} passes), Jacobi over {args.jacobi_frames} frames "
        f"{med['jacobi']:.2f} s ({outs['jacobi'].passes} passes): {speed:.2f}x; max |dx| "
        f"{diff:.2g}; per-frame FD after the causal denoiser: sequential "
        f"{record['rows']['causal']['fd']:.4g}, Jacobi {jac_fd:.4g}"
    )
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        cmd = "python benchmarks/nf_video.py " + " ".join(sys.argv[1:] if argv is None else argv)
        (RESULTS / "nf_video.md").write_text(f"# {cmd.strip()}\n\n{text}\n")
        (RESULTS / "nf_video.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

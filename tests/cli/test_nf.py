"""Normalizing-flow runs through the command line: TARFlow, STARFlow (pixels and latents) and
zuko's flows train, sample (sequential and Jacobi) and report their held-out likelihood.

Runs are tiny, so these tests check plumbing and exact properties (Jacobi = sequential on the
trained run, bits/dim bounds, errors); the flows' quality is checked in tests/nf and
benchmarks/nf_2d.py, benchmarks/nf_images.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge
from flowforge.cli.main import main

TINY = [
    "--threads=1",
    "--train.steps=30",
    "--train.batch_size=64",
    "--train.warmup_steps=0",
    "--train.progress=false",
    "--train.ckpt_every=30",
    "--eval.n_samples=100",
    "--eval.floor_repeats=1",
    "--sample.n=50",
]
TINY_FLOW = ["--method.width=32", "--method.head_dim=16", "--method.layers_per_block=[1,1]"]
TINY_IMAGES = [
    "--threads=1",
    "--train.steps=3",
    "--train.batch_size=16",
    "--train.warmup_steps=0",
    "--train.ema_decay=0",
    "--train.progress=false",
    "--train.ckpt_every=3",
    "--sample.n=20",
    "--eval.n_samples=40",
    "--eval.classifier_steps=5",
    *TINY_FLOW,
]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("nf") / "tarflow"
    argv = ["train", "toy2d_tarflow", f"--out-dir={run}", *TINY, *TINY_FLOW]
    with torch.random.fork_rng():
        assert main(argv) == 0
    return run


def test_toy_run_reports_both_decoders_and_its_likelihood(toy_run, capsys):
    metrics = _metrics(toy_run)
    rows = {r["solver"]: r for r in metrics["results"]}
    assert set(rows) == {"sequential", "jacobi"}
    assert rows["sequential"]["nfe"] == 2  # two blocks, one pass for the second coordinate
    like = metrics["likelihood"]
    assert like["n"] == 100 and math.isfinite(like["nll"])
    assert like["nll_per_dim"] == pytest.approx(like["nll"] / 2)
    assert main(["eval", str(toy_run)]) == 0
    assert "held-out NLL:" in capsys.readouterr().out


def test_jacobi_and_sequential_samples_agree_on_the_trained_run(toy_run, tmp_path):
    run = flowforge.load(toy_run)
    seq = run.sample(64, solver="sequential", seed=3)
    jac = run.sample(64, solver="jacobi", seed=3)
    assert torch.allclose(seq, jac, atol=1e-4)
    out = tmp_path / "x.npy"
    assert main(["sample", str(toy_run), "--n", "8", "--solver", "jacobi", "--out", str(out)]) == 0
    assert np.load(out).shape == (8, 2) and np.isfinite(np.load(out)).all()


def test_python_fit_trains_a_starflow_on_vectors(tmp_path):
    overrides = ["--method.name=starflow", *TINY, *TINY_FLOW, "--method.noise_std=0.05"]
    with torch.random.fork_rng():
        run = flowforge.fit("toy2d_tarflow", *overrides, run_dir=tmp_path / "star")
    assert "likelihood" in run.metrics
    assert run.sample(5).shape == (5, 2)


@pytest.mark.parametrize("kind", ["nsf", "maf"])
def test_zuko_flows_train_through_the_same_recipe_interface(tmp_path, kind):
    pytest.importorskip("zuko")  # the [zuko] extra (installed with [dev])
    run = tmp_path / kind
    argv = ["train", "toy2d_tarflow", f"--out-dir={run}", "--method.name=zuko", *TINY]
    argv += [f"--method.kind={kind}", "--sample.solver=inverse", "--eval.solvers=[inverse]"]
    assert main(argv) == 0
    metrics = _metrics(run)
    assert [r["solver"] for r in metrics["results"]] == ["inverse"]
    assert math.isfinite(metrics["likelihood"]["nll"])
    assert flowforge.load(run).sample(4).shape == (4, 2)


def test_zuko_adapter_keeps_the_flow_contract():
    pytest.importorskip("zuko")
    from flowforge.nf.zuko import zuko_flow

    flow = zuko_flow("nsf", 3, num_classes=2, transforms=2, hidden=(16,)).double()
    x, cond = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    z, logdet = flow(x, cond)
    assert torch.allclose(flow.inverse(z, cond), x, atol=1e-6)
    context = torch.nn.functional.one_hot(cond, 3).double()
    assert torch.allclose(flow.log_prob(x, cond), flow.flow(context).log_prob(x), atol=1e-8)


def test_digits_tarflow_reports_bits_per_dim(tmp_path):
    run = tmp_path / "digits_tarflow"
    assert main(["train", "digits_tarflow", f"--out-dir={run}", *TINY_IMAGES]) == 0
    like = _metrics(run)["likelihood"]
    # A barely trained flow: bits/dim of the 17 grey levels is a finite bound above 0.
    assert 0 < like["bits_per_dim"] < 20
    assert (run / "samples.png").is_file()
    out = tmp_path / "threes.npy"
    argv = ["sample", str(run), "--label", "3", "--n", "4", "--sample.guidance=2"]
    assert main([*argv, "--solver", "jacobi", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)


def test_digits_starflow_trains_on_an_autoencoders_latents(tmp_path, train_tiny):
    ae = tmp_path / "ae"
    assert train_tiny("digits_ae", ae) == 0
    run = tmp_path / "digits_starflow"
    argv = ["train", "digits_starflow", f"--out-dir={run}", f"--data.autoencoder={ae}"]
    assert main([*argv, *TINY_IMAGES, "--method.layers_per_block=[1,2]"]) == 0
    assert (run / "codec.safetensors").is_file()
    assert math.isfinite(_metrics(run)["likelihood"]["nll_per_dim"])
    out = tmp_path / "latent.npy"
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 16, 16)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--method.patch_size=3"], "method.patch_size=3: patch_size=3 does not divide the 8x8"),
        (["--method.width=40"], "method.width=40 is not a multiple of method.head_dim=16"),
        (["--method.layers_per_block=[]"], "must list >= 1 layer per block"),
        (["--method.noise=uniform"], "set method.denoise=none"),
        (["--data.conditional=false", "--sample.guidance=2"], "sample.guidance"),
        (["--sample.solver=heun"], "set sample.solver=sequential"),
        (["--eval.dopri5=true"], "eval.dopri5=true needs a velocity field"),
    ],
)
def test_bad_flow_settings_are_named(tmp_path, capsys, args, words):
    argv = ["train", "digits_tarflow", f"--out-dir={tmp_path / 'r'}", *TINY_IMAGES, *args]
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_video_starflow_trains_samples_and_continues_videos(tmp_path):
    run = tmp_path / "video"
    argv = ["train", "video_starflow", f"--out-dir={run}", "--data.image_size=8"]
    argv += ["--data.frames=4", "--data.n_train=64", "--method.layers_per_block=[1,1]"]
    argv += ["--method.width=16", "--method.head_dim=8", "--eval.classifier_steps=5"]
    tiny = [a for a in TINY_IMAGES if not a.startswith("--method.")]
    assert main([*argv, *tiny]) == 0
    metrics = _metrics(run)
    rows = {r["solver"]: r for r in metrics["results"]}
    assert set(rows) == {"sequential", "jacobi"}
    assert rows["sequential"]["nfe"] == 4 + 4  # a pass per frame, then per token (one block)
    for key in ("fd", "displacement_error", "direction_accuracy"):
        assert math.isfinite(rows["jacobi"][key])
    assert metrics["floors"]["direction_accuracy"] == 1.0
    assert (run / "samples.png").is_file()
    out = tmp_path / "v.npy"
    assert main(["sample", str(run), "--n", "3", "--label", "1", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 4, 1, 8, 8)
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "v.png")]) == 0
    # image-to-video from Python: the given first frame is kept, the rest sampled after it
    loaded = flowforge.load(run)
    first = loaded.data.test_x[:3, :1]
    z = torch.randn(3, *loaded.data.shape, dtype=torch.float32)
    video = loaded.model.decode(z, loaded.data.test_labels[:3], known=first)
    assert torch.equal(video.x[:, :1], first)


def test_video_settings_are_checked(tmp_path, capsys):
    argv = ["train", "video_starflow", f"--out-dir={tmp_path / 'r'}", *TINY]
    assert main([*argv, "--eval.metrics=[fd,w2]"]) == 2
    assert "video runs measure ['fd', 'motion']" in capsys.readouterr().err
    assert main([*argv, "--method.name=tarflow"]) == 2
    assert "trains on vectors or images" in capsys.readouterr().err
    assert main([*argv, "--method.patch_size=3"]) == 2
    assert "patch_size=3 does not divide the 16x16 images" in capsys.readouterr().err


def test_a_diverging_flow_keeps_its_last_good_checkpoint(tmp_path, capsys):
    """A non-finite log-determinant (here: lr 1e12 after 10 good steps) stops the run with the
    step named; the checkpoint of step 10 stays, finite."""
    from safetensors.torch import load_file

    from flowforge.train.checkpoint import checkpoint_step

    run = tmp_path / "diverge"
    base = ["train", "toy2d_tarflow", f"--out-dir={run}", *TINY, *TINY_FLOW, "--no-eval"]
    assert main([*base, "--train.steps=10", "--train.ckpt_every=10"]) == 0
    again = ["train", str(run), "--train.steps=40", "--train.lr=1e12", "--train.grad_clip=0"]
    assert main([*again, "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "(step 10) is intact" in err
    assert checkpoint_step(run) == 10
    assert all(torch.isfinite(v).all() for v in load_file(run / "model.safetensors").values())

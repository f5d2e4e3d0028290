"""Probe the command line with malformed inputs: every case must end in one clear line.

Each case builds its input (a broken CSV, a damaged weights file, a bad setting ...) in a
scratch folder, runs ``flowforge`` on it and checks that it exits with status 2, prints one
line on stderr naming the file, key or value (the case's words), prints no traceback, writes
nothing it was not asked to and loses nothing (the inputs and the trained run are unchanged).
Then the runs that must not fail silently: a diverging run keeps its last good checkpoint, two
writers on one run directory, a run killed before it wrote anything but its config.

    python scripts/probe_inputs.py                # every case in-process (about a minute)
    python scripts/probe_inputs.py --subprocess   # through `python -m flowforge` (slower)

``tests/cli/test_bad_input.py`` runs the same table in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Tiny settings: a 2-D run trains in about a second.
TINY = [
    "--threads=1",
    "--model.hidden=16",
    "--model.depth=1",
    "--train.steps=20",
    "--train.batch_size=32",
    "--train.warmup_steps=0",
    "--train.ckpt_every=10",
    "--train.progress=false",
    "--eval.n_samples=50",
    "--eval.floor_repeats=1",
    "--eval.nfes=2",
    "--eval.solvers=euler",
    "--eval.dopri5=false",
    "--sample.n=50",
]


@dataclass
class Case:
    """One malformed input.

    Attributes:
        name: a short name.
        argv: the ``flowforge`` arguments; ``{tmp}`` is the scratch folder, ``{run}`` a trained
            unconditional run, ``{cond}`` a trained class-conditional run (copies of them).
        words: what the one-line error must contain.
        setup: writes the case's input files into the scratch folder.
        absent: paths (relative to the scratch folder) that must not exist afterwards.
    """

    name: str
    argv: list[str]
    words: list[str]
    setup: Callable[[Path], None] | None = None
    absent: list[str] = field(default_factory=lambda: ["out"])


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _npy(name: str, array: np.ndarray, truncate: bool = False) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=array.dtype == object)
        data = buffer.getvalue()
        (tmp / name).write_bytes(data[: len(data) // 2] if truncate else data)

    return setup


def _images(sizes: list[tuple[int, int]], modes: list[str] | None = None, sub: str = ""):
    def setup(tmp: Path) -> None:
        from PIL import Image

        folder = tmp / "imgs" / sub
        folder.mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            mode = (modes or ["L"] * len(sizes))[i]
            Image.new(mode, (w, h)).save(folder / f"img{i}.png")

    return setup


def _damage(file: str, how: str) -> Callable[[Path], None]:
    """Damage a weights file of the trained run copy: garbage, or random tensor bytes under an
    intact header, or a non-finite tensor with a consistent checksum."""

    def setup(tmp: Path) -> None:
        path = tmp / "run" / file
        if how == "garbage":
            path.write_bytes(b"garbage")
            return
        if how == "tensor_bytes":
            data = bytearray(path.read_bytes())
            header = 8 + int.from_bytes(data[:8], "little")
            rng = np.random.default_rng(0)
            data[header:] = rng.integers(0, 256, len(data) - header, dtype=np.uint8).tobytes()
            path.write_bytes(bytes(data))
            return
        import torch
        from safetensors import safe_open
        from safetensors.torch import load_file

        from flowforge.train.checkpoint import _save_weights_file

        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            step = int(f.metadata()["step"])
        name = sorted(tensors)[0]
        tensors[name] = torch.full_like(tensors[name], float("nan"))
        _save_weights_file(tensors, path, step)

    return setup


def _train_only(tmp: Path) -> None:
    """A run directory written by flowforge.train.train alone (no run config)."""
    import torch

    from flowforge.train import TrainConfig, train

    def objective(m, x, c, g):
        return (m(x) - x).square().mean(1)

    def data(n, g):
        return (torch.randn(n, 2, generator=g),)

    config = TrainConfig(steps=2, batch_size=8, progress=False)
    train(torch.nn.Linear(2, 2), objective, data, config, tmp / "py")


CSV_RUN = ["train", "toy2d_fm", "--out-dir={tmp}/out", *TINY]
CASES: list[Case] = [
    # ---- tables -------------------------------------------------------------------------
    Case("csv nan", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["row 2, column 2", "NaN"],
         _write("d.csv", "1,2\n3,nan\n5,6\n")),
    Case("csv text cell", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["row 3, column 2", "'abc'"],
         _write("d.csv", "x,y\n1,2\n3,abc\n")),
    Case("csv ragged", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["row 2 has 3 columns"],
         _write("d.csv", "1,2\n3,4,5\n")),
    Case("csv utf-16", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["d.csv", "not a UTF-8 text"],
         _write("d.csv", "x,y\n1,2\n3,4\n".encode("utf-16"))),
    Case("csv binary", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["d.csv", "not a UTF-8 text"],
         _write("d.csv", bytes(range(128, 256)) * 3)),
    Case("csv 1e39", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["row 2, column 2", "float32"],
         _write("d.csv", "1,2\n3,1e39\n5,6\n")),
    Case("csv 1e300", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["row 3, column 1", "float32"],
         _write("d.csv", "1,2\n3,4\n1e300,6\n")),
    Case("csv empty", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["d.csv", "no data rows"],
         _write("d.csv", "")),
    Case("csv header only", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["no data rows"],
         _write("d.csv", "x,y\n")),
    Case("csv one row", [*CSV_RUN, "--data.path={tmp}/d.csv"], ["at least two rows"],
         _write("d.csv", "1,2\n")),
    Case("csv missing", [*CSV_RUN, "--data.path={tmp}/none.csv"], ["none.csv", "no such file"]),
    Case("txt file", [*CSV_RUN, "--data.path={tmp}/d.txt"], ["d.txt", "unknown extension"],
         _write("d.txt", "1,2\n")),
    Case("npy garbage", [*CSV_RUN, "--data.path={tmp}/g.npy"], ["g.npy", "not a .npy file"],
         _write("g.npy", bytes(range(256)))),
    Case("npy objects", [*CSV_RUN, "--data.path={tmp}/o.npy"], ["o.npy", "Python objects"],
         _npy("o.npy", np.array([{"a": 1}, None], dtype=object))),
    Case("npy truncated", [*CSV_RUN, "--data.path={tmp}/t.npy"], ["t.npy", "truncated"],
         _npy("t.npy", np.ones((100, 3)), truncate=True)),
    Case("npy no columns", [*CSV_RUN, "--data.path={tmp}/z.npy"], ["z.npy", "(10, 0)"],
         _npy("z.npy", np.zeros((10, 0)))),
    Case("npy 3-D", [*CSV_RUN, "--data.path={tmp}/c.npy"], ["c.npy", "3-D"],
         _npy("c.npy", np.zeros((4, 2, 2)))),
    Case("npy inf", [*CSV_RUN, "--data.path={tmp}/i.npy"], ["i.npy", "a[1, 0]"],
         _npy("i.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))),
    Case("label column out of range",
         [*CSV_RUN, "--data.path={tmp}/d.csv", "--data.label_column=5",
          "--data.conditional=true"], ["data.label_column=5", "0..1"],
         _write("d.csv", "1,0\n3,1\n5,0\n")),
    Case("label not an integer",
         [*CSV_RUN, "--data.path={tmp}/d.csv", "--data.label_column=1",
          "--data.conditional=true"], ["row 2, column 2", "label"],
         _write("d.csv", "1,0\n3,0.5\n5,0\n")),
    # ---- settings -----------------------------------------------------------------------
    Case("unknown key", [*CSV_RUN, "--train.stesp=5"], ["'train.stesp'", "train.steps"]),
    Case("unknown section", [*CSV_RUN, "--trian.steps=5"], ["'trian'", "'train'"]),
    Case("wrong type", [*CSV_RUN, "--train.steps=many"], ["train.steps='many'", "int"]),
    Case("bad choice", [*CSV_RUN, "--sample.solver=heunn"], ["sample.solver", "'heun'"]),
    Case("nan setting", [*CSV_RUN, "--train.lr=nan"], ["train.lr", "finite"]),
    Case("inf setting", [*CSV_RUN, "--method.time_shift=inf"], ["method.time_shift", "finite"]),
    Case("negative lr", [*CSV_RUN, "--train.lr=-1"], ["train.lr=-1.0"]),
    Case("zero steps", [*CSV_RUN, "--train.steps=0"], ["train.steps=0"]),
    Case("batch not divisible", [*CSV_RUN, "--train.grad_accum=3"], ["grad_accum=3"]),
    Case("nfe not divisible", [*CSV_RUN, "--sample.nfe=3"], ["sample.nfe=3", "[2, 4, 6"]),
    Case("guidance unconditional", [*CSV_RUN, "--sample.guidance=2"], ["class-conditional"]),
    Case("eval one sample", [*CSV_RUN, "--eval.n_samples=1"], ["eval.n_samples=1", ">= 2"]),
    Case("threads zero", [*CSV_RUN, "--threads=0"], ["threads=0"]),
    Case("name with slash", ["train", "toy2d_fm", "--name=a/b", *TINY], ["name='a/b'"],
         absent=["a"]),
    Case("unknown recipe", [*CSV_RUN, "--method.name=meanflw"], ["'meanflow'"]),
    Case("key of another recipe", [*CSV_RUN, "--method.pairs=5"], ["method.name=reflow"]),
    Case("own sampler on fm", [*CSV_RUN, "--sample.solver=fewstep"], ["a fm run uses ODE"]),
    Case("missing teacher", [*CSV_RUN, "--method.name=reflow", "--method.teacher={tmp}/no"],
         ["is not a run directory"]),
    Case("unknown preset", ["train", "toy2d_fn", *TINY], ["'toy2d_fm'"]),
    Case("override without value", [*CSV_RUN, "--train.steps"], ["--train.steps=VALUE"]),
    Case("unrecognised argument", ["sample", "{run}", "--bogus"], ["'--bogus'"]),
    # ---- images -------------------------------------------------------------------------
    Case("images of mixed sizes",
         ["train", "digits", "--out-dir={tmp}/out", "--data.path={tmp}/imgs", *TINY,
          "--data.image_size=null"],
         ["img0.png", "img1.png", "data.image_size="], _images([(8, 8), (9, 9)])),
    Case("images of mixed channels",
         ["train", "digits", "--out-dir={tmp}/out", "--data.path={tmp}/imgs", *TINY],
         ["img1.png", "data.image_channels=1"], _images([(8, 8), (8, 8)], ["L", "RGB"])),
    Case("corrupt image",
         ["train", "digits", "--out-dir={tmp}/out", "--data.path={tmp}/imgs", *TINY],
         ["broken.png"], _write("imgs/broken.png", b"not a png")),
    Case("empty image folder",
         ["train", "digits", "--out-dir={tmp}/out", "--data.path={tmp}/imgs", *TINY],
         ["no images found"], _write("imgs/readme.txt", "no images")),
    Case("digits of side 12", ["train", "digits", "--out-dir={tmp}/out", "--data.image_size=12"],
         ["digits come in 8 or 16"]),
    Case("channels for a named set", ["train", "digits", "--out-dir={tmp}/out",
                                      "--data.image_channels=3"], ["data.image_channels=3"]),
    # ---- trained runs -------------------------------------------------------------------
    Case("sample a missing run", ["sample", "{tmp}/nope"], ["nope", "does not exist"],
         absent=["nope"]),
    Case("sample an empty folder", ["sample", "{tmp}/empty"], ["not a flowforge run"],
         _write("empty/.keep", ""), absent=["empty/sample.npy"]),
    Case("sample a run of train() alone", ["sample", "{tmp}/py"], ["run_config"], _train_only,
         absent=["py/sample.npy"]),
    Case("garbage weights", ["sample", "{run}", "--out", "{tmp}/x.npy"], ["corrupt"],
         _damage("ema.safetensors", "garbage"), absent=["x.npy"]),
    Case("random tensor bytes", ["sample", "{run}", "--out", "{tmp}/x.npy"], ["checksum"],
         _damage("ema.safetensors", "tensor_bytes"), absent=["x.npy"]),
    Case("non-finite weights", ["sample", "{run}", "--out", "{tmp}/x.npy"],
         ["non-finite", "in tensor"], _damage("ema.safetensors", "nan"), absent=["x.npy"]),
    Case("samples that overflow", ["sample", "{cond}", "--guidance", "1e300", "--out",
                                   "{tmp}/x.npy"], ["nan or inf", "nothing was written"],
         absent=["x.npy"]),
    Case("out suffix", ["sample", "{run}", "--out", "{tmp}/x.txt"], [".npy"], absent=["x.txt"]),
    Case("out folder missing", ["sample", "{run}", "--out", "{tmp}/a/b/x.npy"], ["does not exist"],
         absent=["a"]),
    Case("label out of range", ["sample", "{cond}", "--label", "8", "--out", "{tmp}/x.npy"],
         ["--label=8", "0..7"], absent=["x.npy"]),
    Case("label on unconditional", ["sample", "{run}", "--label", "1", "--out", "{tmp}/x.npy"],
         ["unconditional"], absent=["x.npy"]),
    Case("guidance nan", ["sample", "{cond}", "--guidance", "nan", "--out", "{tmp}/x.npy"],
         ["sample.guidance=nan", "finite"], absent=["x.npy"]),
    Case("guidance inf", ["sample", "{cond}", "--guidance", "inf", "--out", "{tmp}/x.npy"],
         ["sample.guidance=inf", "finite"], absent=["x.npy"]),
    Case("sample nfe not divisible", ["sample", "{run}", "--solver", "rk4", "--nfe", "6",
                                      "--out", "{tmp}/x.npy"], ["[4, 8, 12"], absent=["x.npy"]),
    Case("eval one sample", ["eval", "{run}", "--n-samples", "1"], ["eval.n_samples=1"],
         absent=[]),
    Case("eval of a training key", ["eval", "{run}", "--train.steps=3"], ["sample.* and eval.*"],
         absent=[]),
    Case("resume with another model", ["train", "{run}", "--model.hidden=8"],
         ["model.hidden (16 -> 8)"], absent=[]),
]  # fmt: skip


def _digest(folder: Path) -> dict[str, str]:
    """Hashes of every file below ``folder`` (to prove nothing was lost or changed)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".lock":
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _finite(path: Path) -> bool:
    return bool(np.isfinite(np.load(path, allow_pickle=False)).all())


def run_flowforge(argv: list[str], subprocess_mode: bool) -> tuple[int, str]:
    """(exit status, stderr) of ``flowforge argv``, in-process or in a subprocess."""
    if subprocess_mode:
        proc = subprocess.run(
            [sys.executable, "-m", "flowforge", *argv], capture_output=True, text=True, timeout=300
        )
        return proc.returncode, proc.stderr
    from flowforge.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
        except Exception as e:  # a traceback a user would see
            code, err = 1, io.StringIO(f"Traceback (uncaught {type(e).__name__}): {e}")
    return code, err.getvalue()


def train_fixtures(root: Path, subprocess_mode: bool = False) -> dict[str, Path]:
    """The trained runs the cases read: unconditional and class-conditional toy runs."""
    runs = {"run": root / "run", "cond": root / "cond"}
    if not runs["run"].is_dir():
        for name, preset in (("run", "toy2d_fm"), ("cond", "toy2d_cond")):
            code, err = run_flowforge(
                ["train", preset, f"--out-dir={runs[name]}", *TINY], subprocess_mode
            )
            assert code == 0, err
    return runs


def check_case(case: Case, tmp: Path, runs: dict[str, Path], subprocess_mode=False) -> dict:
    """Run one case in the scratch folder ``tmp``; returns what happened."""
    for name, path in runs.items():  # each case gets its own copy of the trained runs
        shutil.copytree(path, tmp / name)
    if case.setup is not None:
        case.setup(tmp)
    before = _digest(tmp)
    argv = [a.format(tmp=tmp, run=tmp / "run", cond=tmp / "cond") for a in case.argv]
    code, err = run_flowforge(argv, subprocess_mode)
    lines = [line for line in err.strip().splitlines() if "Warning" not in line]
    lines = [line for line in lines if not line.startswith("  ")]  # warnings' source lines
    after = _digest(tmp)
    lost = [k for k, v in before.items() if after.get(k) != v]
    written = [k for k in after if k not in before]
    present = [p for p in case.absent if (tmp / p).exists()]
    message = lines[-1] if lines else ""
    missing = [w for w in case.words if w not in message]
    nonfinite = [w for w in written if w.endswith(".npy") and not _finite(tmp / w)]
    return {
        "case": case.name,
        "code": code,
        "message": message,
        "one_line": len(lines) == 1,
        "traceback": "Traceback" in err,
        "missing_words": missing,
        "lost": lost,
        "written": [w for w in written if not w.startswith(("run/", "cond/"))] + present,
        "nonfinite_outputs": nonfinite,
        "ok": code == 2
        and len(lines) == 1
        and not missing
        and not lost
        and not present
        and "Traceback" not in err,
    }


# ---- runs that must not fail silently ------------------------------------------------------


def probe_divergence(tmp: Path, subprocess_mode: bool) -> dict:
    """A run that diverges after a good checkpoint keeps it, and resumes from it."""
    import torch
    from safetensors.torch import load_file

    from flowforge.train.checkpoint import checkpoint_step

    run = tmp / "diverge"
    base = ["train", "toy2d_fm", f"--out-dir={run}", *TINY, "--no-eval"]
    code, _ = run_flowforge([*base, "--train.steps=10"], subprocess_mode)
    assert code == 0
    code, err = run_flowforge(
        ["train", str(run), "--train.steps=60", "--train.lr=1e12", "--train.grad_clip=0",
         "--train.log_every=100", "--no-eval"], subprocess_mode,
    )  # fmt: skip
    kept = checkpoint_step(run)
    weights = load_file(run / "model.safetensors")
    finite = all(torch.isfinite(v).all().item() for v in weights.values())
    resumed, _ = run_flowforge(  # from the kept checkpoint, at a sane learning rate
        ["train", str(run), "--train.steps=30", "--train.lr=1e-3", "--no-eval"], subprocess_mode
    )
    return {
        "case": "diverging run",
        "code": code,
        "message": err.strip().splitlines()[-1] if err.strip() else "",
        "ok": code == 2 and kept == 10 and finite and resumed == 0 and "step 10" in err,
        "kept_step": kept,
        "finite": finite,
        "lost": [] if finite and kept == 10 else ["the last good checkpoint"],
        "traceback": "Traceback" in err,
    }


def probe_two_writers(tmp: Path, subprocess_mode: bool = False) -> dict:
    """A second writer on a run directory is refused while the first trains; readers work."""
    run = tmp / "busy"
    argv = ["train", "toy2d_fm", f"--out-dir={run}", *TINY, "--train.steps=1000000",
            "--train.ckpt_every=50", "--no-eval"]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "flowforge", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from flowforge.train.checkpoint import checkpoint_step

        deadline = time.time() + 120
        while time.time() < deadline and not (run.is_dir() and checkpoint_step(run)):
            time.sleep(0.2)
        code, err = run_flowforge(["train", str(run), "--no-eval"], subprocess_mode)
        again, err2 = run_flowforge(argv, subprocess_mode)
        reader, _ = run_flowforge(
            ["sample", str(run), "--out", str(tmp / "r.npy")], subprocess_mode
        )
    finally:
        first.kill()
        first.wait()
    pid = str(first.pid)
    return {
        "case": "two writers",
        "code": code,
        "message": err.strip().splitlines()[-1] if err.strip() else "",
        "ok": code == 2 and again == 2 and pid in err and pid in err2 and reader == 0,
        "traceback": "Traceback" in err + err2,
        "lost": [],
    }


def probe_killed_early(tmp: Path, subprocess_mode: bool = False) -> dict:
    """A start killed right after it wrote its config resumes with `flowforge train RUN`."""
    run = tmp / "killed"
    argv = ["train", "toy2d_fm", f"--out-dir={run}", *TINY, "--no-eval"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "config.yaml").is_file():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    code, err = run_flowforge(["train", str(run), "--no-eval"], subprocess_mode)
    return {
        "case": "killed at the start",
        "code": code,
        "message": err.strip().splitlines()[-1] if err.strip() else "",
        "ok": code == 0 and (run / "model.safetensors").is_file(),
        "traceback": "Traceback" in err,
        "lost": [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subprocess", action="store_true", help="run `python -m flowforge`")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="flowforge-probe-"))
    runs = train_fixtures(root / "fixtures", args.subprocess)
    results = []
    for i, case in enumerate(CASES):
        tmp = root / f"case{i:03d}"
        tmp.mkdir()
        results.append(check_case(case, tmp, runs, args.subprocess))
    for probe in (probe_divergence, probe_two_writers, probe_killed_early):
        tmp = root / probe.__name__
        tmp.mkdir()
        results.append(probe(tmp, args.subprocess) if probe is probe_divergence else probe(tmp))
    width = max(len(r["case"]) for r in results)
    for r in results:
        mark = "ok  " if r["ok"] else "FAIL"
        print(f"{mark} {r['case']:<{width}}  exit {r['code']}  {r['message'][:110]}")
    totals = {
        "inputs tried": len(results),
        "clear errors (or the wanted outcome)": sum(r["ok"] for r in results),
        "tracebacks": sum(r["traceback"] for r in results),
        "silent non-finite outputs": sum(bool(r.get("nonfinite_outputs")) for r in results),
        "data lost": sum(bool(r["lost"]) for r in results),
    }
    print("\n" + "\n".join(f"{k}: {v}" for k, v in totals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"totals": totals, "results": results}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if totals["clear errors (or the wanted outcome)"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

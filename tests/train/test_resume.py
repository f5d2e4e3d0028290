"""A run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time

import torch

from flowforge.train.checkpoint import checkpoint_step
from flowforge.train.loop import train

SCRIPT = """
import sys, time
import torch
from torch import nn
from flowforge.train import TrainConfig, train


def make_model():
    torch.manual_seed(0)
    # Dropout draws from the global RNG, which train() reseeds per chunk: resume stays exact.
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 2))


def sampler(n, generator):
    return torch.randn(n, 2, generator=generator), None


def objective(model, x, cond, generator):
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (model(x + 0.1 * noise) - x.flip(1)).square().mean(1)


def config(steps):
    return TrainConfig(steps=steps, batch_size=32, lr=1e-2, warmup_steps=3, ema_decay=0.9,
                       ckpt_every=3, log_every=1, progress=False)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    delay = float(sys.argv[3])

    def slow_sampler(n, generator):
        time.sleep(delay)  # stretches the run so the parent can kill it mid-way
        return sampler(n, generator)

    train(make_model(), objective, slow_sampler, config(int(sys.argv[2])), sys.argv[1])
"""


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    run_dir, steps = tmp_path / "run", 40
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(steps), "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and child.poll() is None:
        killed_at = checkpoint_step(run_dir) if (run_dir / "trainer_state.pt").exists() else None
        if killed_at is not None and killed_at >= 6:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    assert 6 <= checkpoint_step(run_dir) < steps  # really interrupted mid-run

    m = runpy.run_path(str(script))  # same model, data and objective, in this process
    resumed = train(m["make_model"](), m["objective"], m["sampler"], m["config"](steps), run_dir)
    reference = train(m["make_model"](), m["objective"], m["sampler"], m["config"](steps))
    # Every random draw is a function of (seed, step, chunk) and the checkpoint restores weights,
    # Adam moments, LR-schedule counter and EMA exactly, so the runs agree bit for bit up to
    # float64 rounding (measured max difference: 0.0); 1e-10 leaves room for a different BLAS
    # reduction order in the killed child process.
    for got, want in ((resumed.model, reference.model), (resumed.ema, reference.ema)):
        for p, q in zip(got.parameters(), want.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert resumed.losses == reference.losses[len(reference.losses) - len(resumed.losses) :]
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, steps + 1))  # no duplicates, no gaps

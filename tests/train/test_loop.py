"""train(): learning, LR schedule, accumulation, resume, logs, hooks, errors."""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from flowforge.train import distributed
from flowforge.train.checkpoint import _set_rng_state
from flowforge.train.config import TrainConfig
from flowforge.train.loop import lr_factor, train

M = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # target map y = M x (a rotation)
NOISE = 0.1


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))


def sampler(n: int, generator: torch.Generator):
    return torch.randn(n, 2, generator=generator), None


def objective(model, x, cond, generator):
    """Noisy regression: the minimum expected loss is NOISE**2 (the label noise variance)."""
    y = x @ M.T.to(x) + NOISE * torch.randn(x.shape, generator=generator, device=x.device)
    return (model(x) - y).square().mean(1)  # (B,)


def clean_objective(model, x, cond, generator):
    return (model(x) - x @ M.T.to(x)).square().mean(1)


def config(**kw) -> TrainConfig:
    base = dict(steps=30, batch_size=16, lr=1e-2, ema_decay=0.0, progress=False, log_every=10)
    return TrainConfig(**{**base, **kw})


def params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_decreases_to_noise_floor():
    out = train(make_model(), objective, sampler, config(steps=300, batch_size=64, lr=2e-2))
    first, last = out.losses[0], sum(out.losses[-30:]) / 30
    # The optimum is the label-noise variance 0.01; 2x that leaves room for the finite network
    # and for mini-batch noise, while the untrained network starts near 1.
    assert first > 0.5 and last < 2 * NOISE**2, (first, last)
    assert out.step == 300 and len(out.losses) == 300


def test_lr_schedule_follows_formula(tmp_path):
    steps, warmup, lr, m = 20, 4, 1e-2, 0.1
    cfg = config(steps=steps, warmup_steps=warmup, lr=lr, min_lr_ratio=m, log_every=1)
    train(make_model(), objective, sampler, cfg, tmp_path)
    used = [r["lr"] for r in read_metrics(tmp_path)]  # lr of optimizer steps 0 .. steps - 1

    def expected(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        return lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))

    assert used == pytest.approx([expected(s) for s in range(steps)], rel=1e-12)
    assert used[warmup - 1] == pytest.approx(lr)  # warm-up ends at the peak
    assert lr_factor(warmup + (steps - warmup) // 2, cfg) == pytest.approx(m + (1 - m) / 2)
    assert lr_factor(steps, cfg) == pytest.approx(m)  # the floor is reached at config.steps
    const = config(schedule="constant", warmup_steps=2)
    assert [lr_factor(s, const) for s in (0, 1, 2, 29)] == [0.5, 1.0, 1.0, 1.0]


def test_grad_accum_matches_one_big_batch():
    """A dataset batch is split into contiguous chunks, so with a noise-free objective
    grad_accum only changes the summation order of the same gradient."""
    data = TensorDataset(torch.randn(40, 2, generator=torch.Generator().manual_seed(1)))
    results = [
        params(train(make_model(), clean_objective, data, config(grad_accum=a)).model)
        for a in (1, 2, 4)
    ]
    # float64 rounding of differently ordered sums (~1e-16) amplified by 30 Adam steps.
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=1e-10)


class Crash(Exception):
    pass


def test_resume_after_exception_equals_uninterrupted(tmp_path):
    cfg = config(steps=20, ckpt_every=5, log_every=3, ema_decay=0.9, warmup_steps=3)
    reference = train(make_model(), objective, sampler, cfg)
    calls = 0

    def crashing_sampler(n, generator):
        nonlocal calls
        calls += 1
        if calls == 13:  # inside step 13, after the checkpoint of step 10
            raise Crash
        return sampler(n, generator)

    with pytest.raises(Crash):
        train(make_model(), objective, crashing_sampler, cfg, tmp_path)
    resumed = train(make_model(seed=7), objective, sampler, cfg, tmp_path)  # init is overwritten
    assert resumed.step == 20 and len(resumed.losses) == 10
    assert resumed.losses == reference.losses[10:]
    assert torch.equal(params(resumed.model), params(reference.model))
    assert torch.equal(params(resumed.ema), params(reference.ema))
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == [3, 6, 9, 12, 15, 18, 20]  # line 12 of the crashed run was dropped/rewritten
    # A finished run is not trained further; extending steps continues it.
    again = train(make_model(seed=7), objective, sampler, cfg, tmp_path)
    assert again.losses == [] and torch.equal(params(again.model), params(reference.model))


def test_resume_with_changed_settings_warns(tmp_path):
    constant = dict(schedule="constant")  # steps changing a cosine schedule warns too
    train(make_model(), objective, sampler, config(steps=4, **constant), tmp_path)
    with pytest.warns(UserWarning, match=r"changed settings \['lr'\]"):
        out = train(
            make_model(), objective, sampler, config(steps=6, lr=5e-3, **constant), tmp_path
        )
    assert out.step == 6 and len(out.losses) == 2  # steps may grow without a warning


def _crash_after(calls_allowed: int):
    calls = 0

    def crashing_sampler(n, generator):
        nonlocal calls
        calls += 1
        if calls > calls_allowed:
            raise Crash
        return sampler(n, generator)

    return crashing_sampler


def test_resume_uses_the_new_optimizer_settings(tmp_path):
    old = config(steps=10, ckpt_every=5, log_every=1, warmup_steps=2, min_lr_ratio=0.1)
    with pytest.raises(Crash):
        train(make_model(), objective, _crash_after(7), old, tmp_path)  # checkpoint at step 5
    new = config(**{**asdict(old), "lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1})
    with pytest.warns(UserWarning, match=r"changed settings \['lr', 'weight_decay', 'beta1'"):
        train(make_model(), objective, sampler, new, tmp_path)
    used = {r["step"] - 1: r["lr"] for r in read_metrics(tmp_path)}  # by 0-indexed step
    assert [used[s] for s in range(5, 10)] == pytest.approx(
        [3e-3 * lr_factor(s, new) for s in range(5, 10)], rel=1e-12
    )
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 3e-3 and state["scheduler"]["base_lrs"] == [3e-3]
    assert tuple(group["betas"]) == (0.8, 0.99) and group["weight_decay"] == 0.1


def test_more_steps_on_resume_warn_that_the_schedule_is_restretched(tmp_path):
    train(make_model(), objective, sampler, config(steps=4), tmp_path)
    with pytest.warns(UserWarning, match="cosine learning-rate schedule is re-stretched") as rec:
        train(make_model(), objective, sampler, config(steps=6), tmp_path)
    assert not any("changed settings" in str(w.message) for w in rec)  # steps may grow
    constant = tmp_path / "constant"
    train(make_model(), objective, sampler, config(steps=4, schedule="constant"), constant)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant lr is not re-stretched: no warning
        train(make_model(), objective, sampler, config(steps=6, schedule="constant"), constant)


def test_resume_compares_only_the_train_settings(tmp_path):
    cfg = config(steps=4)

    def run_config(train_cfg, nfe, nfes, threads):
        return {
            "train": asdict(train_cfg),
            "sample": {"nfe": nfe},
            "eval": {"nfes": nfes},
            "threads": threads,
        }

    train(make_model(), objective, sampler, cfg, tmp_path, run_config=run_config(cfg, 8, [2], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sampling/evaluation settings do not touch training
        train(
            make_model(), objective, sampler, cfg, tmp_path, run_config=run_config(cfg, 4, [4], 2)
        )
    lr = config(steps=4, lr=5e-3)
    with pytest.warns(UserWarning, match=r"changed settings \['train.lr'\]"):
        train(make_model(), objective, sampler, lr, tmp_path, run_config=run_config(lr, 4, [4], 2))


def test_resume_restores_host_rngs_on_rank_0_and_reseeds_other_ranks(tmp_path, monkeypatch):
    cfg = config(steps=4)
    train(make_model(), objective, sampler, cfg, tmp_path)  # the checkpoint holds rank 0's RNGs
    saved = torch.load(tmp_path / "trainer_state.pt", weights_only=True)["rng"]

    def draws(rank: int) -> tuple[float, float]:
        # A finished run: train() only loads, so the draws show the RNG state it leaves.
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        train(make_model(), objective, sampler, cfg, tmp_path)
        return float(np.random.rand()), random.random()

    by_rank = {r: draws(r) for r in (0, 1, 2)}
    assert draws(1) == by_rank[1]  # deterministic in (seed, rank, step)
    assert len(set(by_rank.values())) == 3  # ranks draw different streams
    _set_rng_state(saved)
    assert by_rank[0] == (float(np.random.rand()), random.random())  # rank 0: the saved state


def test_metrics_checkpoint_and_eval_hook(tmp_path):
    seen = []

    def hook(step, model):
        seen.append((step, model.training))
        return {"w_norm": params(model).norm()}

    cfg = config(steps=10, log_every=4, ckpt_every=4, eval_every=5, ema_decay=0.5)
    out = train(make_model(), objective, sampler, cfg, tmp_path, eval_hook=hook)
    lines = read_metrics(tmp_path)
    train_lines = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train_lines] == [4, 8, 10]
    assert set(train_lines[0]) == {"step", "loss", "lr", "grad_norm", "steps_per_s", "time"}
    assert train_lines[0]["loss"] == pytest.approx(sum(out.losses[:4]) / 4)
    evals = [r for r in lines if "eval" in r]
    assert [r["step"] for r in evals] == [5, 10] and seen == [(5, False), (10, False)]
    assert evals[-1]["eval"]["w_norm"] == pytest.approx(params(out.ema).norm().item())
    assert (tmp_path / "config.yaml").read_text().startswith("steps: 10\n")
    saved = load_file(tmp_path / "ema.safetensors")
    assert torch.equal(saved["0.weight"], out.ema[0].weight)


def test_bf16_autocast_is_used_and_learns():
    dtypes = set()

    def recording(model, x, cond, generator):
        out = model(x)
        dtypes.add(out.dtype)
        return (out.float() - x @ M.T.to(x)).square().mean(1)

    net = make_model().float()
    cfg = config(steps=150, batch_size=64, lr=2e-2, precision="bf16")
    out = train(net, recording, lambda n, g: torch.randn(n, 2, generator=g), cfg)
    assert dtypes == {torch.bfloat16}
    # bf16 keeps ~3 significant digits, so the noise-free loss stalls near 1e-3, far below 0.5.
    assert out.losses[0] > 0.5 and sum(out.losses[-10:]) / 10 < 0.02, out.losses[-1]


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=10 is not divisible by train.grad_accum=4"):
        config(batch_size=10, grad_accum=4)
    with pytest.raises(ValueError, match=r"return the per-example loss of shape \(16,\)"):
        train(make_model(), lambda m, x, c, g: objective(m, x, c, g).mean(), sampler, config())
    with pytest.raises(TypeError, match="neither a Dataset nor a callable"):
        train(make_model(), objective, [1, 2, 3], config())
    with pytest.raises(TypeError, match="must be a TrainConfig"):
        train(make_model(), objective, sampler, {"steps": 3})
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        train(make_model(), lambda m, x, c, g: objective(m, x, c, g) * math.inf, sampler, config())
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"flowforge\[tb\]"):
            train(make_model(), objective, sampler, config(tensorboard=True), tmp_path)
    else:
        train(make_model(), objective, sampler, config(tensorboard=True), tmp_path)
        assert any((tmp_path / "tensorboard").iterdir())


@pytest.mark.filterwarnings("ignore:resuming .* with steps changed")
def test_ema_warmup_follows_its_decay_schedule_and_resumes(tmp_path):
    # Update n uses d_n = min(d, (1 + n) / (10 + n)); with constant weights w after the first
    # step the shadow is w + prod(d_n) (w0 - w). Here every step changes the weights, so the
    # check replays the schedule on the saved model weights step by step.
    cfg = dict(batch_size=16, lr=1e-2, ema_decay=0.999, ema_warmup=True, progress=False)
    init = make_model()
    w0 = [p.detach().clone() for p in init.parameters()]
    weights, shadow = [], [w.clone() for w in w0]
    for steps in (1, 2, 3):  # resume twice: the counter n comes back from the checkpoint
        out = train(make_model(), objective, sampler, TrainConfig(steps=steps, **cfg), tmp_path)
        weights.append([p.detach().clone() for p in out.model.parameters()])
        n = steps - 1
        d = min(0.999, (1 + n) / (10 + n))
        shadow = [d * s + (1 - d) * w for s, w in zip(shadow, weights[-1], strict=True)]
        for got, want in zip(out.ema.parameters(), shadow, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    plain = train(
        make_model(), objective, sampler, TrainConfig(steps=1, **{**cfg, "ema_warmup": False})
    )
    first = next(plain.ema.parameters())
    torch.testing.assert_close(first, 0.999 * w0[0] + 0.001 * weights[0][0], rtol=0, atol=1e-6)


def exploding(after: int):
    """``objective`` whose loss turns nan after ``after`` calls (its gradients with it)."""
    calls = [0]

    def loss(model, x, cond, generator):
        calls[0] += 1
        value = objective(model, x, cond, generator)
        return value * float("nan") if calls[0] > after else value

    return loss


def test_no_checkpoint_holds_non_finite_weights(tmp_path):
    """The loss is checked only on log steps, but a checkpoint is never written once the loss
    or the weights are non-finite: the run stops at the next checkpoint step, naming the first
    non-finite step, and the last good checkpoint (step 10) is what the directory keeps."""
    from flowforge.train.checkpoint import checkpoint_step, load_weights
    from flowforge.train.loop import TrainingDiverged

    run = tmp_path / "run"
    train(make_model(), objective, sampler, config(steps=10, ckpt_every=10), run)
    good = load_file(run / "model.safetensors")
    wild = config(steps=100, ckpt_every=10, log_every=100)
    with pytest.raises(TrainingDiverged, match=r"nan at step 13.*\(step 10\) is intact") as e:
        train(make_model(), exploding(after=2), sampler, wild, run)  # steps 11, 12 fine
    assert isinstance(e.value, ValueError)  # the command line reports it in one line
    assert checkpoint_step(run) == 10
    kept = load_file(run / "model.safetensors")
    assert all(torch.equal(good[k], kept[k]) for k in good)
    loaded = load_weights(run, make_model(), which="model")
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    resumed = train(make_model(), objective, sampler, config(steps=20, ckpt_every=10), run)
    assert resumed.step == 20 and torch.isfinite(params(resumed.model)).all()


def test_divergence_without_a_run_directory_names_the_step():
    from flowforge.train.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"the loss was nan at step 4;"):
        train(make_model(), exploding(after=3), sampler, config(steps=20, log_every=5))


def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path):
    """Another process holding the run directory's lock (here a plain flock, as a live trainer
    holds it) makes train() refuse at once, naming the holder; the same process may nest."""
    import subprocess
    import sys
    import time

    from flowforge.train.lock import RunDirectoryBusy, run_lock

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, b'pid %d on test' % os.getpid(), 0)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryBusy, match=f"pid {holder.pid} on test"):
            train(make_model(), objective, sampler, config(steps=2), run)
        assert not (run / "config.yaml").exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)  # the OS released the dead holder's lock
    with run_lock(run), run_lock(run):  # free again, and re-entrant within one process
        pass
    assert train(make_model(), objective, sampler, config(steps=2), run).step == 2

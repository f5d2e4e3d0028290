"""Checkpoints: round trip, crash safety, refusal of pickled code, clear errors."""

from __future__ import annotations

import os
import random
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flowforge.train import checkpoint as ckpt
from flowforge.train.checkpoint import (
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    checkpoint_step,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from flowforge.train.ema import EMA


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 3))


def trained_state(seed: int = 0):
    """Model, EMA, AdamW and LambdaLR after two steps, so every state is non-trivial."""
    model = make_model(seed)
    ema = EMA(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    x = torch.randn(8, 3)
    for _ in range(2):
        model(x).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        ema.update(model)
    return model, ema, opt, sched


def fresh_objects():
    model = make_model(seed=1)
    ema = EMA(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, ema, opt, sched


def test_round_trip_reproduces_outputs_optimizer_and_rng(tmp_path):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, step=2, config_dict={"lr": 1e-2})
    expected_rand = (torch.rand(3), np.random.rand(), random.random())

    model2, ema2, opt2, sched2 = fresh_objects()
    step = load_checkpoint(tmp_path, model2, ema2, opt2, sched2, restore_rng=True)
    assert step == 2
    assert torch.equal(torch.rand(3), expected_rand[0])
    assert np.random.rand() == expected_rand[1]
    assert random.random() == expected_rand[2]
    x = torch.randn(5, 3)
    assert torch.equal(model2(x), model(x))
    assert torch.equal(ema2.module(x), ema.module(x))
    assert not torch.equal(ema.module(x), model(x))  # the EMA file is not a copy of the model
    assert ema2.num_updates == ema.num_updates == 2
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], opt2.state[p2][key])
    assert sched2.last_epoch == sched.last_epoch == 2
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # The trainer state is plain data (weights_only) and the weights carry their step.
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 2 and state["config"] == {"lr": 1e-2}
    assert load_weights(tmp_path, make_model(2), which="model")(x).equal(model(x))
    assert load_weights(tmp_path, make_model(2))(x).equal(ema.module(x))


class Compiled(nn.Module):
    """Stands for torch.compile's OptimizedModule (same ``_orig_mod`` attribute, same keys)
    without importing dynamo, which alone takes seconds."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def test_wrappers_are_stripped(tmp_path):
    model, _, opt, _ = trained_state()
    assert all(k.startswith("_orig_mod.") for k in Compiled(model).state_dict())
    save_checkpoint(tmp_path, Compiled(model), None, opt, None, 1, {})
    assert set(load_file(tmp_path / MODEL_FILE)) == set(model.state_dict())
    nested = nn.Sequential(Compiled(model[0]), model[1], model[2])  # a compiled submodule
    save_checkpoint(tmp_path, nested, None, opt, None, 1, {})
    assert set(load_file(tmp_path / MODEL_FILE)) == set(model.state_dict())
    save_checkpoint(tmp_path, nn.DataParallel(model), None, opt, None, 2, {})
    assert set(load_file(tmp_path / MODEL_FILE)) == set(model.state_dict())
    # A "module."-prefixed file (plain torch save of a DDP model) still loads.
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    save_file(prefixed, tmp_path / MODEL_FILE, metadata={"step": "2"})
    x = torch.randn(4, 3)
    assert load_weights(tmp_path, make_model(3), which="model")(x).equal(model(x))


def test_tied_weights_save(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # safetensors refuses shared storage unless we copy
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path, model, None, opt, None, 1, {})
    other = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    load_weights(tmp_path, other, which="model")
    assert torch.equal(other[1].weight, model[0].weight)


def test_pickled_code_is_refused(tmp_path):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    # A reference to os.system is the classic payload; nn.Module pickles code references too.
    torch.save({"step": 2, "optimizer": os.system, "net": nn.Linear(1, 1)}, tmp_path / STATE_FILE)
    with pytest.raises(
        ValueError, match=r"trainer_state\.pt contains pickled code.*not be loaded"
    ):
        load_checkpoint(tmp_path, make_model())


@pytest.mark.parametrize("name", [MODEL_FILE, EMA_FILE, STATE_FILE])
@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_file_gives_clear_error(tmp_path, name, keep):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: int(len(data) * keep)])
    model2, ema2, opt2, sched2 = fresh_objects()
    with pytest.raises(
        ValueError, match=rf"{name.replace('.', '[.]')} is corrupt.*delete the run"
    ):
        load_checkpoint(tmp_path, model2, ema2, opt2, sched2)


def test_missing_run_dir_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", make_model())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(tmp_path / "nope", make_model())
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.pt is missing"):
        load_checkpoint(tmp_path, make_model())
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing.*train first"):
        load_weights(tmp_path, make_model())
    model, _, opt, _ = trained_state()
    save_checkpoint(tmp_path, model, None, opt, None, 1, {})
    with pytest.raises(FileNotFoundError, match=r"ema\.safetensors is missing"):
        load_checkpoint(tmp_path, make_model(), ema=EMA(make_model(), 0.9))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_weights(tmp_path, nn.Linear(3, 3))
    with pytest.raises(ValueError, match="which='last' is not valid"):
        load_weights(tmp_path, make_model(), which="last")


def test_config_with_objects_is_refused(tmp_path):
    model, _, opt, _ = trained_state()
    with pytest.raises(TypeError, match=r"config_dict\['data'\]\['path'\]=PosixPath.*str\(path\)"):
        save_checkpoint(tmp_path, model, None, opt, None, 1, {"data": {"path": Path("a.csv")}})
    assert not (tmp_path / STATE_FILE).exists()


def test_files_from_different_steps_are_detected(tmp_path):
    model, _, opt, _ = trained_state()
    save_checkpoint(tmp_path / "a", model, None, opt, None, 1, {})
    save_checkpoint(tmp_path / "b", model, None, opt, None, 2, {})
    os.replace(tmp_path / "a" / MODEL_FILE, tmp_path / "b" / MODEL_FILE)
    with pytest.raises(ValueError, match="holds step 1 but .* holds step 2"):
        load_checkpoint(tmp_path / "b", make_model())


def test_ema_off_removes_stale_ema_file(tmp_path):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    save_checkpoint(tmp_path, model, None, opt, sched, 2, {})
    assert not (tmp_path / EMA_FILE).exists()
    x = torch.randn(4, 3)
    assert load_weights(tmp_path, make_model(5), which="ema")(x).equal(model(x))  # fallback


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_loads(run_dir: Path, params: list[torch.Tensor], step: int) -> None:
    model2, ema2, opt2, sched2 = fresh_objects()
    assert load_checkpoint(run_dir, model2, ema2, opt2, sched2) == step
    assert all(torch.equal(a, b) for a, b in zip(_params(model2), params, strict=True))


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    """A real write failure that also works as root: RLIMIT_FSIZE makes writes fail with EFBIG."""
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    old = _params(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))  # files of a checkpoint exceed 2 KiB
    try:
        with pytest.raises(OSError, match="could not write the checkpoint of step 2.*unchanged"):
            save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    _assert_loads(tmp_path, old, step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILE, EMA_FILE, STATE_FILE])


def test_run_dir_below_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    model, _, opt, _ = trained_state()
    with pytest.raises(OSError, match="could not write the checkpoint"):
        save_checkpoint(tmp_path / "file" / "run", model, None, opt, None, 1, {})


@pytest.mark.parametrize("crash_at", ["commit", "after_commit"])
def test_crash_during_save_leaves_one_consistent_checkpoint(tmp_path, monkeypatch, crash_at):
    """Crash before the commit rename: old checkpoint; after it: the next load rolls forward."""
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    old = _params(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    new = _params(model)
    real_replace = os.replace

    def crashing_replace(src, dst):
        src = Path(src)
        if crash_at == "commit" and src.name == ckpt._STAGING:
            raise OSError(28, "No space left on device")
        if (
            crash_at == "after_commit"
            and src.parent.name == ckpt._READY
            and src.name == STATE_FILE
        ):
            raise KeyboardInterrupt  # stands for the process dying mid-way through the moves
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crashing_replace)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    if crash_at == "commit":
        _assert_loads(tmp_path, old, step=1)
    else:  # model.safetensors already holds step 2, trainer_state.pt still step 1
        assert checkpoint_step(tmp_path) == 2  # the committed checkpoint is the current one
        _assert_loads(tmp_path, new, step=2)
    assert not (tmp_path / ckpt._STAGING).exists() and not (tmp_path / ckpt._READY).exists()


def _listing(run_dir: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(run_dir)), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))


@pytest.mark.parametrize("moved", [(), (MODEL_FILE,)])
def test_load_weights_reads_a_committed_checkpoint_without_moving_files(
    tmp_path, monkeypatch, moved
):
    """A trainer may be finishing the commit at the same time: `sample`/`eval` only read."""
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    with torch.no_grad():
        for net in (model, ema.module):
            for p in net.parameters():
                p.add_(1.0)
    real_replace = os.replace

    def stalled_replace(src, dst):  # the trainer stops after the commit and `moved` moves
        src = Path(src)
        if src.parent.name == ckpt._READY and src.name not in moved:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", stalled_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    before = _listing(tmp_path)
    assert (tmp_path / ckpt._READY / STATE_FILE).exists()
    for which, net in (("model", model), ("ema", ema.module)):
        loaded = load_weights(tmp_path, make_model(5), which=which)
        assert all(torch.equal(a, b) for a, b in zip(_params(loaded), _params(net), strict=True))
    assert _listing(tmp_path) == before  # nothing moved, written or removed


def test_finish_pending_checkpoint_tolerates_a_concurrent_finisher(tmp_path, monkeypatch):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    real_replace = os.replace

    def raced_replace(src, dst):
        if Path(src).parent.name == ckpt._READY:
            real_replace(src, dst)  # the other process moves the file first...
        return real_replace(src, dst)  # ...so ours finds it gone: FileNotFoundError

    monkeypatch.setattr(ckpt.os, "replace", raced_replace)
    save_checkpoint(tmp_path, model, ema, opt, sched, 2, {})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    _assert_loads(tmp_path, _params(model), step=2)
    assert not (tmp_path / ckpt._READY).exists()


def test_readers_look_again_when_a_trainer_moves_the_file_mid_read(tmp_path, monkeypatch):
    """The trainer moves `.checkpoint.ready/<file>` into the run between a reader's check and
    its open: `checkpoint_step` and `load_weights` find it again."""
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    real_load_state, real_load_file = ckpt._load_state, ckpt.load_file
    ready = tmp_path / ckpt._READY
    ready.mkdir()
    (tmp_path / STATE_FILE).rename(ready / STATE_FILE)  # as if just committed, not yet moved
    (tmp_path / MODEL_FILE).rename(ready / MODEL_FILE)
    moved = []

    def finisher_moves_first(path, *args, **kwargs):
        path = Path(path)
        if path.parent == ready:  # the trainer wins the race: the path is gone when we open it
            os.replace(path, tmp_path / path.name)
            moved.append(path.name)
        return (real_load_state if path.name == STATE_FILE else real_load_file)(
            path, *args, **kwargs
        )

    monkeypatch.setattr(ckpt, "_load_state", finisher_moves_first)
    monkeypatch.setattr(ckpt, "load_file", finisher_moves_first)
    assert checkpoint_step(tmp_path) == 1
    loaded = load_weights(tmp_path, make_model(5), which="model")
    assert moved == [STATE_FILE, MODEL_FILE]
    assert all(torch.equal(a, b) for a, b in zip(_params(loaded), _params(model), strict=True))


def test_damaged_tensor_data_and_non_finite_weights_are_refused_on_load(tmp_path):
    """Random bytes under an intact header fail the checksum written with each weights file;
    a file whose tensor is non-finite (with a matching checksum) is refused naming the tensor."""
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    path = tmp_path / MODEL_FILE
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 5] ^= 0xFF  # one flipped byte of tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the checksum"):
        load_weights(tmp_path, make_model(), which="model")
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(tmp_path, make_model(), None, None)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["0.bias"][3] = float("inf")
    ckpt._save_weights_file(tensors, path, step=1)
    with pytest.raises(ValueError, match=r"non-finite values .* tensor '0.bias'"):
        load_weights(tmp_path, make_model(), which="model")


def test_weights_files_record_a_checksum_of_their_tensors(tmp_path):
    model, ema, opt, sched = trained_state()
    save_checkpoint(tmp_path, model, ema, opt, sched, 1, {})
    from safetensors import safe_open

    with safe_open(tmp_path / MODEL_FILE, "pt") as f:
        digest = f.metadata()["digest"]
    assert digest == ckpt._digest(load_file(tmp_path / MODEL_FILE)) and len(digest) == 32

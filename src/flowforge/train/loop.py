"""One ``train()`` for a single process and for ``torchrun`` (DDP), knowing no algorithm.

Per optimizer step ``s`` with global batch ``B`` split into ``K = world_size * grad_accum``
chunks of ``b = B / K`` examples, rank ``r`` runs micro-batches ``k = 0 .. grad_accum - 1`` on
chunks ``j = r * grad_accum + k``::

    x_j, cond_j = stream.chunk(s, j, b)                       # data seeded by (seed, s, j)
    L_j = objective(model, x_j, cond_j, gen_j).mean() / grad_accum   # noise seeded by (seed, s, j)
    grad = (1 / world_size) * sum_r sum_k grad L_j            # DDP all-reduce = global-batch mean
    clip ||grad|| <= grad_clip;  AdamW step;  LR schedule step;  EMA update

Because every chunk is a pure function of ``(seed, s, j)``, one process with ``grad_accum = 2``
computes the same gradients as two ranks with ``grad_accum = 1``, and a resumed run replays the
uninterrupted run exactly.

References:
    Decoupled Weight Decay Regularization (Loshchilov & Hutter, 2019), arXiv:1711.05101.
    SGDR: Stochastic Gradient Descent with Warm Restarts (Loshchilov & Hutter, 2017),
    arXiv:1608.03983 (cosine schedule).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flowforge.train import distributed
from flowforge.train.checkpoint import (
    CONFIG_FILE,
    EMA_FILE,
    checkpoint_step,
    finish_pending_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_config,
)
from flowforge.train.config import TrainConfig
from flowforge.train.data import BatchSource, chunk_generator, chunk_seed, make_stream
from flowforge.train.ema import EMA
from flowforge.train.lock import run_lock
from flowforge.train.logging import MetricsLog, tensorboard_writer
from flowforge.utils.seed import seed_everything
from flowforge.utils.tensor import wider_float

__all__ = [
    "Objective",
    "TrainResult",
    "TrainingDiverged",
    "train",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "resolve_device",
]

Objective = Callable[[nn.Module, Tensor, Tensor | None, torch.Generator | None], Tensor]
_GLOBAL_RNG = 3  # stream tag of the per-chunk reseeding of torch's global RNG
_HOST_RNG = 4  # stream tag of the NumPy/Python RNG seeds of ranks > 0 on resume
# Settings that may change on resume without changing the trained weights.
_HARMLESS = {"steps", "log_every", "ckpt_every", "eval_every", "progress", "tensorboard", "device"}


class TrainingDiverged(FloatingPointError, ValueError):
    """The loss or the weights became non-finite; the last checkpoint on disk is still finite.

    A ``ValueError`` too, so the command line reports it in one line (exit status 2).
    """


@dataclass
class TrainResult:
    """What ``train()`` returns.

    Attributes:
        model: the trained network (unwrapped, in eval mode).
        ema: the EMA shadow network, or None when ``ema_decay == 0``.
        step: optimizer steps taken in total (including those before a resume).
        losses: global-batch mean loss of each step run by this call (the same on every rank).
    """

    model: nn.Module
    ema: nn.Module | None
    step: int
    losses: list[float] = field(default_factory=list)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-indexed).

    ``(step + 1) / warmup`` during warm-up, then 1 (``constant``) or
    ``m + (1 - m) (1 + cos(pi p)) / 2`` with ``p = (step - warmup) / (steps - warmup)`` and
    ``m = min_lr_ratio`` (``cosine``), reaching ``m`` at ``step == steps``.

    Example:
        >>> c = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
        >>> lr_factor(4, c), lr_factor(10, c), round(lr_factor(60, c), 6), lr_factor(110, c)
        (0.5, 1.0, 0.55, 0.1)
    """
    warmup = config.warmup
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over all trainable parameters with the config's lr, betas and weight decay.

    Uses the fused kernel (one pass over all parameters) where torch has one for the parameters'
    device and dtype; benchmarks/peers_2d.py measures it against the default per-tensor update.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; check requires_grad.")
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        weight_decay=config.weight_decay,
        fused=fused,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor` (its step counter is saved in checkpoints)."""

    def factor(step: int) -> float:
        return lr_factor(step, config)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda:LOCAL_RANK`` if CUDA is available else cpu; ``"cuda"`` -> that GPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use 'auto' or 'cpu'.")
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())
    return device


def train(
    model: nn.Module,
    objective: Objective,
    data: BatchSource,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    eval_hook: Callable[[int, nn.Module], dict] | None = None,
    run_config: dict | None = None,
) -> TrainResult:
    """Train ``model`` to minimise ``objective`` on ``data``; resume if ``run_dir`` holds a run.

    Works unchanged single-process and under ``torchrun`` (DDP over NCCL on GPUs, Gloo on CPU);
    see the module docstring for the batch split and the seeding. The global torch RNG is also
    reseeded from ``(seed, step, chunk)`` before every micro-batch, so dropout and objectives
    that ignore ``generator`` are reproducible too.

    Args:
        model: network; moved to the configured device.
        objective: ``objective(model, x, cond, generator) -> (b,)`` per-example loss. An
            objective that keeps state between steps (an EMA target, an auxiliary network and
            its optimizer) exposes ``state_dict()`` / ``load_state_dict(state)``; checkpoints
            then hold that state and a resumed run restores it.
        data: a sampler ``data(n, generator) -> (x, labels_or_None)`` or a ``Dataset`` of ``x`` or
            ``(x, label)`` items (see :mod:`flowforge.train.data`).
        config: hyperparameters.
        run_dir: directory for ``config.yaml``, checkpoints and ``metrics.jsonl`` (rank 0 writes);
            if it holds a checkpoint, training resumes from it up to ``config.steps`` with the
            optimizer settings (lr, betas, weight decay) of ``config``. None: no files, no resume.
        eval_hook: ``eval_hook(step, model) -> dict`` called on rank 0 every ``eval_every``
            steps with the EMA network (else the model) in eval mode; the dict is logged.
        run_config: full run configuration written to ``config.yaml`` and checkpoints (default
            ``asdict(config)``).

    Returns:
        :class:`TrainResult`.

    Example:
        >>> net = torch.nn.Linear(1, 1)
        >>> data = lambda n, g: (torch.randn(n, 1, generator=g),)
        >>> mse = lambda m, x, c, g: (m(x) - 3 * x).square().flatten(1).mean(1)
        >>> cfg = TrainConfig(steps=300, batch_size=32, lr=0.05, ema_decay=0, progress=False)
        >>> out = train(net, mse, data, cfg)
        >>> round(out.model.weight.item(), 2)
        3.0
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config={type(config).__name__} must be a TrainConfig.")
    if not callable(objective):
        raise TypeError(
            f"objective={objective!r} is not callable; pass objective(model, x, cond, generator)."
        )
    if config.tensorboard:
        tensorboard_writer()  # a missing extra is named before anything is written
    if config.warmup != config.warmup_steps:
        warnings.warn(
            f"train.warmup_steps={config.warmup_steps} exceeds train.steps={config.steps}; "
            f"warming up for {config.warmup} steps (a tenth of the run) instead.",
            stacklevel=2,
        )
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # The group outlives this call (torchrun's store cannot host a second init in one process);
    # init() registers its cleanup at exit.
    distributed.init(backend="nccl" if device.type == "cuda" else "gloo")
    writer = run_dir is not None and distributed.is_main()
    with run_lock(run_dir) if writer else contextlib.nullcontext():  # one writer per run
        return _train(model, objective, data, config, run_dir, eval_hook, run_config, device)


def _train(
    model: nn.Module,
    objective: Objective,
    data: BatchSource,
    config: TrainConfig,
    run_dir: str | Path | None,
    eval_hook: Callable[[int, nn.Module], dict] | None,
    run_config: dict | None,
    device: torch.device,
) -> TrainResult:
    W, R, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    A, B = config.grad_accum, config.batch_size
    K = W * A
    if B % K:
        raise ValueError(
            f"train.batch_size={B} is not divisible by world_size * grad_accum = {W} * {A} = {K}; "
            f"use a multiple of {K} such as {max(K, B - B % K)} (each micro-batch gets "
            "batch_size / (world_size * grad_accum) examples)."
        )
    b = B // K
    stream = make_stream(data, config.seed, B)
    config_dict = run_config if run_config is not None else asdict(config)
    run_dir = Path(run_dir) if run_dir is not None else None

    seed_everything(config.seed + R)
    raw = model.to(device)
    float_dtypes = [p.dtype for p in raw.parameters() if p.is_floating_point()]
    x_dtype = float_dtypes[0] if float_dtypes else None
    ema = EMA(raw, config.ema_decay, warmup=config.ema_warms_up) if config.ema_decay > 0 else None
    optimizer = make_optimizer(raw, config)
    scheduler = make_scheduler(optimizer, config)

    start = 0
    if run_dir is not None:
        if main:
            _prepare_run_dir(run_dir, config_dict, config)
        distributed.barrier()
        saved = checkpoint_step(run_dir)
        if saved is not None:
            has_ema = ema is not None and (run_dir / EMA_FILE).exists()
            # The checkpoint holds rank 0's RNG states only; the other ranks reseed theirs.
            start = load_checkpoint(
                run_dir,
                raw,
                ema if has_ema else None,
                optimizer,
                scheduler,
                restore_rng=main,
                objective=objective,
            )
            if not main:
                _seed_host_rngs(chunk_seed(config.seed, _HOST_RNG, start, R))
            _apply_optimizer_settings(optimizer, scheduler, config)
            if ema is not None and not has_ema:  # EMA switched on at resume: start from here
                ema = EMA(raw, config.ema_decay, warmup=config.ema_warms_up)
            distributed.print0(f"resuming {run_dir} from step {start}")
    if W > 1:
        _check_same_step(start, device)

    fwd: nn.Module = torch.compile(raw) if config.compile else raw
    if W > 1:
        fwd = DistributedDataParallel(
            fwd, device_ids=[device.index] if device.type == "cuda" else None
        )
    # A disabled torch.autocast still costs its enter/exit on every micro-batch: fp32 skips it.
    if config.precision == "bf16":
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext()
    params = [p for p in raw.parameters() if p.requires_grad]
    log = MetricsLog(
        run_dir,
        start,
        config.steps,
        main=main,
        progress=config.progress,
        tensorboard=config.tensorboard,
    )
    losses: list[float] = []
    pending_loss: list[Tensor] = []
    pending_norm: list[Tensor] = []
    last_time, last_step = time.perf_counter(), start
    saved = start if run_dir is not None and start > 0 else None  # the last checkpoint's step
    raw.train()
    try:
        for step in range(start, config.steps):
            step_loss: Tensor | None = None
            for k in range(A):
                j = R * A + k
                x, cond = _to_device(*stream.chunk(step, j, b), device, x_dtype)
                generator = chunk_generator(config.seed, step, j, device)
                _reseed_global(chunk_seed(config.seed, _GLOBAL_RNG, step, j), device)
                # All-reduce gradients only after the last micro-batch.
                no_sync = fwd.no_sync() if W > 1 and k < A - 1 else contextlib.nullcontext()
                with no_sync:
                    with autocast:
                        loss = objective(fwd, x, cond, generator)  # (b,)
                    if step == start and k == 0:
                        _check_loss(loss, b)
                    loss = loss.to(wider_float(loss.dtype)).mean()  # bf16 -> fp32
                    if A > 1:
                        loss = loss / A
                    loss.backward()
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = _clip(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(raw)
            done = step + 1
            pending_loss.append(step_loss)
            pending_norm.append(grad_norm.detach())
            log.step()

            ckpt_due = done % config.ckpt_every == 0 or done == config.steps
            if done % config.log_every == 0 or done == config.steps:
                step_losses = _mean_over_ranks(torch.stack(pending_loss), W).tolist()
                losses.extend(step_losses)
                bad = [i for i, v in enumerate(step_losses) if not math.isfinite(v)]
                if bad:
                    raise _diverged(
                        f"the loss was {step_losses[bad[0]]} at step {last_step + bad[0] + 1}",
                        run_dir,
                        saved,
                        config,
                    )
                now = time.perf_counter()
                log.write(
                    {
                        "step": done,
                        "loss": sum(step_losses) / len(step_losses),
                        "lr": lr,
                        "grad_norm": torch.stack(pending_norm).mean().item(),
                        "steps_per_s": (done - last_step) / max(now - last_time, 1e-9),
                        "time": time.time(),
                    }
                )
                pending_loss, pending_norm = [], []
                last_time, last_step = now, done
            eval_due = config.eval_every > 0 and done % config.eval_every == 0
            if eval_hook is not None and eval_due and main:
                log.write({"step": done, "eval": _run_eval(eval_hook, done, ema, raw)})
            if run_dir is not None and ckpt_due:
                # Nothing non-finite is ever saved: the last good checkpoint must survive.
                problem = _nonfinite(pending_loss, last_step, raw, ema, optimizer, device, W)
                if problem:
                    raise _diverged(problem, run_dir, saved, config)
            if run_dir is not None and ckpt_due and main:
                saved = done
                save_checkpoint(
                    run_dir,
                    raw,
                    ema,
                    optimizer,
                    scheduler,
                    done,
                    config_dict,
                    objective_state=_objective_state(objective),
                )
    finally:
        log.close()
    distributed.barrier()  # the final checkpoint exists before any rank returns
    raw.eval()
    return TrainResult(
        model=raw,
        ema=ema.module if ema is not None else None,
        step=max(start, config.steps),
        losses=losses,
    )


def _clip(params: list[Tensor], max_norm: float) -> Tensor:
    """The global gradient norm, the gradients scaled to ``max_norm`` first when it is > 0
    (``clip_grad_norm_``); with clipping off only the norm is computed (no rescaling pass)."""
    if max_norm > 0:
        return nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    return nn.utils.get_total_norm(grads, foreach=True)


def _to_device(
    x: Tensor, cond: Tensor | None, device: torch.device, x_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor | None]:
    """Move a chunk to the device; floating data takes the model's dtype (e.g. float64 CSVs)."""
    x = torch.as_tensor(x).to(device, non_blocking=True)
    if x.is_floating_point() and x_dtype is not None:
        x = x.to(x_dtype)
    cond = torch.as_tensor(cond).to(device, non_blocking=True) if cond is not None else None
    return x, cond


def _reseed_global(seed: int, device: torch.device) -> None:
    """``torch.manual_seed`` for the CPU and the training GPU only (it is slow: it also queues
    seeds for every lazily initialised accelerator, with a traceback each)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _seed_host_rngs(seed: int) -> None:
    """Seed NumPy's and Python's global RNGs (NumPy takes 32 bits)."""
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _apply_optimizer_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    config: TrainConfig,
) -> None:
    """Give a resumed optimizer the config's lr, betas and weight decay.

    ``load_state_dict`` restores the checkpoint's values (and the scheduler its ``base_lrs``);
    the config is what the user asked for and what config.yaml records. The current lr becomes
    ``config.lr * lr_factor(step)`` so the next step uses the new base lr and schedule.
    """
    lr = config.lr * lr_factor(scheduler.last_epoch, config)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        group["lr"] = lr
        group["betas"] = (config.beta1, config.beta2)
        group["weight_decay"] = config.weight_decay
    scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [lr] * len(optimizer.param_groups)  # what get_last_lr() reports


def _find(tree: dict, sub: dict, prefix: str = "") -> str | None:
    """Dotted prefix (``""`` or e.g. ``"train."``) under which ``sub`` sits in ``tree``."""
    if tree == sub:
        return prefix
    for k, v in tree.items():
        found = _find(v, sub, f"{prefix}{k}.") if isinstance(v, dict) else None
        if found is not None:
            return found
    return None


def _prepare_run_dir(run_dir: Path, config_dict: dict, config: TrainConfig) -> None:
    """Finish an interrupted checkpoint commit, warn on changed settings, write config.yaml.

    Only the train settings are compared (full dotted keys): the CLI refuses changed model,
    data or method settings itself, and sampling/evaluation settings do not touch training.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        finish_pending_checkpoint(run_dir)
        old_path = run_dir / CONFIG_FILE
        if old_path.exists() and checkpoint_step(run_dir) is not None:
            old = yaml.safe_load(old_path.read_text()) or {}
            new = asdict(config)
            prefix = _find(config_dict, new)
            if prefix is None:  # a run_config without the train settings: compare it all
                prefix, new = "", config_dict
            for key in prefix.split(".")[:-1]:
                old = old.get(key) if isinstance(old, dict) else None
            old = old if isinstance(old, dict) else {}
            diff = _diff(old, new)
            changed = [prefix + k for k in diff if k not in _HARMLESS]
            if changed:
                warnings.warn(
                    f"resuming {run_dir} with changed settings {changed}; the resumed run will "
                    "not match an uninterrupted one. Use a new run directory to start afresh.",
                    stacklevel=4,
                )
            if "steps" in diff and config.schedule != "constant":
                warnings.warn(
                    f"resuming {run_dir} with {prefix}steps changed from {old.get('steps')} to "
                    f"{config.steps}: the {config.schedule} learning-rate schedule is "
                    "re-stretched to the new step count, so the run will not match an "
                    f"uninterrupted run of {config.steps} steps (train a new run directory for "
                    "that).",
                    stacklevel=4,
                )
        save_config(run_dir, config_dict)
    except OSError as e:
        raise OSError(
            f"cannot write to the run directory {run_dir} ({e}); pass a writable run_dir."
        ) from e


def _diff(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_loss(loss: object, b: int) -> None:
    if not isinstance(loss, Tensor) or loss.shape != (b,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"the objective returned {shape} for a micro-batch of {b} examples; return the "
            f"per-example loss of shape ({b},) (e.g. .flatten(1).mean(1)), not its mean."
        )


def _mean_over_ranks(values: Tensor, world_size: int) -> Tensor:
    if world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / world_size
    return values.cpu()


def _check_same_step(step: int, device: torch.device) -> None:
    """All ranks must resume from the same checkpoint (the run dir must be shared)."""
    t = torch.tensor([step, -step], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != -t[1].item():
        raise RuntimeError(
            f"ranks resumed from different steps ({-t[1].item()} to {t[0].item()}); put the run "
            "directory on a file system every rank can read."
        )


def _run_eval(
    hook: Callable[[int, nn.Module], dict], step: int, ema: EMA | None, raw: nn.Module
) -> dict:
    net = ema.module if ema is not None else raw
    was_training = net.training
    net.eval()
    try:
        metrics = hook(step, net)
    finally:
        net.train(was_training)
    if not isinstance(metrics, dict):
        raise TypeError(f"eval_hook returned {type(metrics).__name__}; return a dict of metrics.")
    return metrics


def _nonfinite(
    pending_loss: list[Tensor],
    last_step: int,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    world_size: int,
) -> str | None:
    """What is non-finite among the losses since ``last_step``, the weights, the EMA and the
    optimizer state (one device sync, agreed across ranks), or None."""
    tensors = [p for p in model.parameters()]
    if ema is not None:
        tensors += list(ema.module.parameters())
    tensors += [v for state in optimizer.state.values() for v in state.values()
                if isinstance(v, Tensor) and v.is_floating_point()]  # fmt: skip
    finite_loss = torch.stack([torch.isfinite(v).all() for v in pending_loss or [torch.ones(())]])
    finite_state = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
    flags = torch.cat([~finite_loss, (~finite_state)[None]]).to(device=device, dtype=torch.int32)
    if world_size > 1:  # every rank stops together
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    flags = flags.cpu()
    if flags[:-1].any():
        i = int(flags[:-1].nonzero()[0])
        return f"the loss was {pending_loss[i].item()} at step {last_step + i + 1}"
    if flags[-1]:
        step = last_step + len(pending_loss)
        return f"the weights or optimizer state became non-finite by step {step}"
    return None


def _diverged(
    problem: str, run_dir: Path | None, saved: int | None, config: TrainConfig
) -> TrainingDiverged:
    fix = (
        f"lower train.lr (now {config.lr:g}), set train.grad_clip (now {config.grad_clip:g}; 0 is "
        "off) or a warm-up, or check the data for nan/inf"
    )
    if run_dir is None:
        return TrainingDiverged(f"training diverged: {problem}; {fix}.")
    if saved is None:
        return TrainingDiverged(
            f"training diverged: {problem}, before the first checkpoint, so {run_dir} holds "
            f"none; {fix}, and train again."
        )
    return TrainingDiverged(
        f"training diverged: {problem}; nothing non-finite was saved, so the last checkpoint in "
        f"{run_dir} (step {saved}) is intact; {fix}, then resume it (e.g. `flowforge train "
        f"{run_dir} --train.lr={config.lr / 10:g}`)."
    )


def _objective_state(objective: Objective) -> dict | None:
    """The objective's ``state_dict()`` when it keeps state between steps, else None."""
    state_dict = getattr(objective, "state_dict", None)
    return state_dict() if callable(state_dict) else None

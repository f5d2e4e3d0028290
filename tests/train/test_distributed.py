"""DDP under torchrun (2 CPU processes, Gloo) equals one process with gradient accumulation."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import torch
from safetensors.torch import load_file

from flowforge.train import distributed
from flowforge.train.loop import train

SCRIPT = """
import sys
import torch
from torch import nn
from torch.utils.data import TensorDataset
from flowforge.train import TrainConfig, distributed, train


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))


def sampler(n, generator):
    return torch.randn(n, 2, generator=generator), None


def dataset():  # 20 points: global batches of 8 straddle epochs
    g = torch.Generator().manual_seed(5)
    return TensorDataset(torch.randn(20, 2, generator=g), torch.arange(20) % 2)


def objective(model, x, cond, generator):
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    shift = 0.0 if cond is None else cond.unsqueeze(1).to(x.dtype)
    return (model(x + 0.1 * noise) - x.flip(1) - shift).square().mean(1)


def config(grad_accum):
    return TrainConfig(steps=5, batch_size=8, grad_accum=grad_accum, lr=1e-2, ema_decay=0.5,
                       log_every=1, progress=False)


def few_step_objectives(out):
    # Two-time objectives under DDP: MeanFlow and FreeFlow take a JVP (run on the inner network,
    # the wrapper cannot carry it), TwinFlow calls the model several times per step. FreeFlow's
    # fake velocity net is trained by the objective outside DDP: each rank sees its own noise,
    # so only gradient averaging keeps the ranks' copies equal. Every rank saves its weights.
    from safetensors.torch import save_file
    from flowforge.distill import FreeFlowLoss, MeanFlowLoss, TwinFlowLoss
    from flowforge.distill.dispersive import dispersive_infonce_l2
    from flowforge.models.mlp import MLPConfig, MLPField

    def two_time():
        torch.manual_seed(0)
        return MLPField(MLPConfig(dim=2, hidden=16, depth=2, n_times=2, time_embed_dim=0))

    torch.manual_seed(0)
    teacher = MLPField(MLPConfig(dim=2, hidden=16, depth=1)).requires_grad_(False)
    freeflow = FreeFlowLoss(teacher, corr_weight=0.5)
    meanflow = MeanFlowLoss(dispersive=dispersive_infonce_l2, dispersive_weight=0.5,
                            feature_modules=("net.3",))
    R = distributed.rank()
    objectives = {"meanflow": meanflow, "freeflow": freeflow, "twinflow": TwinFlowLoss()}
    for name, loss in objectives.items():
        result = train(two_time(), loss, sampler, config(1), f"{out}/{name}")
        save_file(dict(result.model.state_dict()), f"{out}/{name}_rank{R}.safetensors")
    state = {k: v.contiguous() for k, v in freeflow.fake.state_dict().items()}
    save_file(state, f"{out}/fake_rank{R}.safetensors")
    save_file(dict(teacher.state_dict()), f"{out}/teacher.safetensors")


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    out = sys.argv[1]
    assert distributed.world_size() == 2
    train(make_model(), objective, sampler, config(1), out + "/sampler")
    train(make_model(), objective, dataset(), config(1), out + "/dataset")
    train(make_model(), objective, sampler, config(2), out + "/no_sync")  # K = 2 ranks x 2
    few_step_objectives(out)
"""


def test_single_process_defaults():
    assert distributed.init() is False
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main()
    distributed.barrier()
    distributed.cleanup()


def test_two_gloo_ranks_equal_one_process_with_twice_the_grad_accum(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path / "ddp")], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    out = tmp_path / "ddp"
    for name in ("meanflow", "freeflow", "twinflow", "fake"):  # every rank holds the same nets
        ranks = [load_file(out / f"{name}_rank{r}.safetensors") for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys()
        for key in ranks[0]:
            torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
    start = load_file(out / "teacher.safetensors")  # the fake net's initial weights
    assert any(
        not torch.equal(load_file(out / "fake_rank0.safetensors")[k], start[k]) for k in start
    )

    m = runpy.run_path(str(script))
    runs = [("sampler", m["sampler"], 2), ("dataset", m["dataset"](), 2)]
    runs.append(("no_sync", m["sampler"], 4))  # DDP's no_sync path: 2 micro-batches per rank
    for name, data, grad_accum in runs:
        single = tmp_path / "single" / name
        train(m["make_model"](), m["objective"], data, m["config"](grad_accum), single)
        for file in ("model.safetensors", "ema.safetensors"):
            got, want = load_file(tmp_path / "ddp" / name / file), load_file(single / file)
            assert got.keys() == want.keys()
            # Same chunks, same seeds; only the float64 summation differs (all-reduce of two
            # rank means vs accumulation of two halved micro-batch means). Halving is exact in
            # binary, so this measured 0.0; 1e-12 allows another BLAS/all-reduce order.
            for key in got:
                torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12)
        losses = [
            [json.loads(s)["loss"] for s in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (tmp_path / "ddp" / name, single)
        ]
        assert len(losses[0]) == 5
        torch.testing.assert_close(
            torch.tensor(losses[0]), torch.tensor(losses[1]), atol=1e-12, rtol=0
        )

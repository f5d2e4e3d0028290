"""Boltzmann targets as a run's data (``data.name: gmm40 | manywell32 | dw4 | lj13 | aldp``).

A target is an energy, its training samples for maximum likelihood (exact samples, a long MALA
reference run for DW-4 and LJ-13, or molecular dynamics for alanine dipeptide, cached) and a
reference set for the metrics (a different seed). Alanine dipeptide (``aldp``, the
``[molecules]`` extra) lives in the internal coordinates of its Z-matrix; its rows add the KL and
W2 of the Ramachandran (phi, psi) distribution against a long MD reference (``rama_kl``,
``rama_w2``), and its pictures a Ramachandran plot. The flow works in coordinates standardised
by the training samples' mean and spread (``StandardizedFlow``), so it starts at the target's
scale.

An evaluation reports one row per sampler (``eval.solvers`` out of ``inverse``, ``snis``,
``smc``), each from ``eval.n_samples`` proposals: ESS / n (``ess``), log Z and its error against
the known value (``log_z_error``, where log Z is known), the 1-D W2 between the energies of the
(reweighted) samples and of the reference (``energy_w2``) and their sliced W2 (``sliced_w2``);
``nfe`` is the target energy evaluations per sample. The floors are two reference sets apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from flowforge.metrics.sliced import sliced_wasserstein, wasserstein2_1d
from flowforge.nf.boltzmann import (
    DoubleWellParticles,
    Energy,
    GaussianMixture,
    LennardJones,
    ManyWell,
    kish_ess,
    multinomial_resample,
    reference_samples,
)
from flowforge.recipes import plots
from flowforge.recipes.base import RunData, Sampler, Samples
from flowforge.recipes.config import ConfigError, DataConfig, ModelConfig, RunConfig
from flowforge.utils.io import atomic_path

if TYPE_CHECKING:
    from flowforge.recipes.base import Recipe

__all__ = [
    "TARGETS",
    "TargetData",
    "build_target",
    "load_target",
    "target",
    "target_samples",
]

DATA_INFO = "data.json"


def _icosahedron(n: int, generator: torch.Generator | None) -> Tensor:
    """(n, 39) LJ-13 starts: a centred icosahedron at the LJ spacing, jittered by 0.05."""
    phi = (1 + math.sqrt(5)) / 2
    verts = torch.tensor(
        [[0, a, b * phi] for a in (-1, 1) for b in (-1, 1)]
        + [[a, b * phi, 0] for a in (-1, 1) for b in (-1, 1)]
        + [[b * phi, 0, a] for a in (-1, 1) for b in (-1, 1)]
    )
    shell = torch.cat([torch.zeros(1, 3), verts / verts.norm(dim=1, keepdim=True)])  # (13, 3)
    x = shell.reshape(1, -1).expand(n, -1)
    return x + 0.05 * torch.randn(x.shape, generator=generator)


@dataclass
class _Target:
    """How a named target is made, sampled for training, and referenced."""

    build: type[Energy] | object
    describe: str
    dim: int  # coordinates per sample, known without building the energy
    init: object = None  # MALA starts of a reference run (n, generator) -> (n, D)
    step_size: float = 1e-3
    samples: object = None  # (energy, n, seed) -> (n, D): training/reference samples, if not MALA
    settings: object = None  # DataConfig -> build keywords of a new run (e.g. the MD to cut on)


def _aldp(**settings) -> Energy:
    from flowforge.nf.boltzmann.molecules import AlanineDipeptideInternal  # noqa: PLC0415

    return AlanineDipeptideInternal(**settings)


def _aldp_samples(energy, n: int, seed: int) -> Tensor:
    """MD frames in internal coordinates: every 100 fs for training (seed 0), every 500 fs for
    references (other seeds: less correlated frames)."""
    from flowforge.nf.boltzmann.molecules import cached_dynamics  # noqa: PLC0415

    x = cached_dynamics(energy.molecule, n, every=100 if seed == 0 else 500, seed=seed)
    return energy.to_internal(x)


TARGETS: dict[str, _Target] = {
    "gmm40": _Target(GaussianMixture, "GMM-40 (2-D, 40 modes, log Z = 0)", 2),
    "manywell32": _Target(lambda: ManyWell(32), "ManyWell-32 (2^16 modes, log Z, quadrature)", 32),
    "dw4": _Target(DoubleWellParticles, "DW-4 (4 particles in 2-D, MALA reference)", 8),
    "lj13": _Target(
        LennardJones, "LJ-13 (13 atoms in 3-D, MALA reference)", 39, _icosahedron, 1e-4
    ),  # fmt: skip
    "aldp": _Target(
        _aldp,
        "alanine dipeptide in vacuum (Amber, 300 K, internal coordinates, MD reference)",
        60,
        samples=_aldp_samples,
        settings=lambda d: {"cut_frames": d.n_train},
    ),
}


def target(name: str, **settings) -> Energy:
    """The energy of ``data.name`` (``settings``: what a saved run's ``data.json`` recorded)."""
    return TARGETS[name].build(**settings)


def target_samples(name: str, energy: Energy, n: int, seed: int) -> Tensor:
    """``n`` samples of the target (exact, else the cached MALA reference of ``seed``)."""
    if energy.exact:
        return energy.sample(n, torch.Generator().manual_seed(seed)).float()
    t = TARGETS[name]
    if t.samples is not None:
        return t.samples(energy, n, seed).float()
    g = torch.Generator().manual_seed(seed)
    chains = min(1000, n)
    init = None if t.init is None else t.init(chains, g)
    return reference_samples(
        energy, n, chains=chains, step_size=t.step_size, init=init, seed=seed
    ).float()


class TargetData(RunData):
    """A Boltzmann target as a run's data.

    Attributes:
        name: ``data.name``.
        energy: the target.
        dim: coordinates per sample.
        mean, std: (D,) the standardisation of the flow's coordinates (from training samples).
        train: training samples for maximum likelihood (a sampler or a ``TensorDataset``).
    """

    num_classes = 0
    columns = None

    def __init__(self, name: str, energy: Energy, mean, std, train=None, n_train=8192) -> None:
        self.name, self.energy, self.dim = name, energy, energy.dim
        self.mean, self.std = list(map(float, mean)), list(map(float, std))
        self.train, self.n_train = train, n_train

    @property
    def shape(self) -> tuple[int, ...]:
        """``(D,)``."""
        return (self.dim,)

    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """None: targets are unconditional."""
        return None

    def to_data(self, x: Tensor) -> Tensor:
        """The identity: the flow's samples are already in the target's coordinates."""
        return x

    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        """Not used: the recipe builds its flow."""
        raise TypeError("a Boltzmann target's network is the recipe's flow (method section).")

    def reference(self, n: int, seed: int) -> Tensor:
        """(n, D) reference samples of seed ``seed`` (exact, else a cached MALA run)."""
        return target_samples(self.name, self.energy, n, seed)

    def fresh(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) reference samples for pictures (seed drawn from ``generator``)."""
        return self.reference(n, int(torch.randint(2**31, (), generator=generator)))

    @torch.no_grad()
    def generate(
        self, sampler: Sampler, n, nfe, solver, generator, labels=None, device="cpu"
    ) -> Samples:
        """``n`` samples of ``sampler`` (``inverse``, ``snis`` or ``smc``) from fresh noise."""
        x_0 = torch.randn(n, self.dim, generator=generator, dtype=torch.float32).to(device)
        x, used = sampler(x_0, solver, nfe)
        return Samples(x.float().cpu(), used)

    def save(self, run_dir: Path) -> None:
        """data.json: the target's name, dimension and standardisation."""
        info = {"kind": "energy", "name": self.name, "dim": self.dim, "mean": self.mean,
                "std": self.std, "settings": self.energy.settings()}  # fmt: skip
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))

    def describe(self) -> str:
        """The target in a few words."""
        return TARGETS[self.name].describe

    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress) -> dict:
        """The sampler rows (see the module)."""
        return evaluate(recipe, model, self, step, progress)

    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> dict:
        """samples.png (2-D targets) and energies.png (the energy histograms)."""
        return pictures(recipe, model, self, step)


def build_target(config: DataConfig) -> TargetData:
    """The target of ``config.name`` with ``config.n_train`` training samples (exact targets
    draw fresh ones every batch)."""
    t = TARGETS[config.name]
    energy = target(config.name, **(t.settings(config) if t.settings else {}))
    x = target_samples(config.name, energy, config.n_train, seed=0)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    if energy.exact:

        def train(n, generator):
            return energy.sample(n, generator).float(), None

    else:
        train = TensorDataset(x)
    return TargetData(config.name, energy, mean, std, train, config.n_train)


def load_target(run_dir: str | Path, config: RunConfig) -> TargetData:
    """A trained run's target from its data.json (no training samples)."""
    path = Path(run_dir, DATA_INFO)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {run_dir} is not a complete flowforge run.")
    try:
        info = json.loads(path.read_text())
        name = info["name"]
        if name != config.data.name:
            raise ValueError(f"it names {name!r}, the config {config.data.name!r}")
        energy = target(name, **info.get("settings", {}))
        return TargetData(name, energy, info["mean"], info["std"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupt ({e}); retrain the run.") from None


def _row(solver: str, x: Tensor, log_w: Tensor | None, nfe: int, energy: Energy, ref, e_ref,
         log_z: tuple[float, float | None] | None, seed: int) -> dict:  # fmt: skip
    """One eval row: ESS / n, log Z, energy W2 and sliced W2 of (resampled) samples."""
    row: dict = {"solver": solver, "nfe": nfe}
    if log_w is not None:
        row["ess"] = kish_ess(log_w).item() / log_w.numel()
    if log_z is not None:
        row["log_z"] = log_z[0]
        if log_z[1] is not None:
            row["log_z_se"] = log_z[1]
        if energy.log_z is not None:
            row["log_z_error"] = abs(log_z[0] - energy.log_z)
    e_x = energy.energy(x.double())
    ok = torch.isfinite(e_x)
    if not ok.any():
        row.update(energy_w2=math.inf, sliced_w2=math.inf)
        return row
    row["energy_w2"] = float(wasserstein2_1d(e_x[ok], e_ref))
    g = torch.Generator().manual_seed(seed)
    row["sliced_w2"] = float(sliced_wasserstein(x[ok].float(), ref, generator=g))
    if hasattr(energy, "ramachandran"):
        row.update(_ramachandran_metrics(energy, x[ok], ref, seed))
    return row


RAMA_W2_SAMPLES = 2000  # exact OT on the torus: n^2 costs


def _ramachandran_metrics(energy: Energy, x: Tensor, ref: Tensor, seed: int) -> dict:
    """KL (histogram, 36 x 36) and W2 (exact, on ``RAMA_W2_SAMPLES`` of each) of the (phi, psi)
    of ``x`` against those of ``ref``."""
    from flowforge.nf.boltzmann.molecules import ramachandran_kl, ramachandran_w2  # noqa: PLC0415

    a, a_ref = energy.ramachandran(x.double()), energy.ramachandran(ref.double())
    g = torch.Generator().manual_seed(seed)
    i = torch.randperm(len(a), generator=g)[:RAMA_W2_SAMPLES]
    j = torch.randperm(len(a_ref), generator=g)[:RAMA_W2_SAMPLES]
    return {"rama_kl": ramachandran_kl(a_ref, a), "rama_w2": ramachandran_w2(a_ref[j], a[i])}


def evaluate(recipe: Recipe, model: nn.Module, data: TargetData, step, progress=True) -> dict:
    """One row per sampler of ``eval.solvers`` from ``eval.n_samples`` proposals."""
    from flowforge.nf.boltzmann import importance_weights, smc  # noqa: PLC0415

    config, m = recipe.config, recipe.method
    e = config.eval
    n = e.n_samples
    ref, ref_2 = data.reference(n, e.seed), data.reference(n, e.seed + 1)
    e_ref = data.energy.energy(ref.double())
    floors = {
        "ess": 1.0,
        "energy_w2": float(wasserstein2_1d(data.energy.energy(ref_2.double()), e_ref)),
        "sliced_w2": float(
            sliced_wasserstein(ref_2, ref, generator=torch.Generator().manual_seed(e.seed))
        ),
    }
    if data.energy.log_z is not None:
        floors["log_z_error"] = 0.0
    if hasattr(data.energy, "ramachandran"):
        floors.update(_ramachandran_metrics(data.energy, ref_2, ref, e.seed))
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(e.seed)
    with torch.no_grad():
        x = model.sample(n, generator=g).to(device)
        log_q = model.log_prob(x).double().cpu()
    x = x.float().cpu()
    weights = importance_weights(-data.energy.energy(x.double()), log_q, m.energy_cutoff,
                                 m.quantile)  # fmt: skip
    results = []
    jobs = [s for s in e.solvers if s in recipe.solvers]
    for solver in tqdm(jobs, desc="eval", unit="sampler", disable=not progress, leave=False):
        if solver == "inverse":
            row = _row(solver, x, None, 0, data.energy, ref, e_ref, None, e.seed)
        elif solver == "snis":
            ok = not torch.isneginf(weights.log_w).all()
            idx = multinomial_resample(weights.log_w, n, g) if ok else None
            row = _row(solver, x[idx] if ok else x, weights.log_w, 1, data.energy, ref, e_ref,
                       weights.log_z() if ok else None, e.seed)  # fmt: skip
            row["non_finite"] = weights.non_finite
        else:
            out = smc(model, data.energy, n, m.smc_steps, m.smc_step_size, m.smc_mcmc,
                      m.smc_substeps, m.smc_ess_threshold, generator=g,
                      x=x.to(device))  # fmt: skip
            cost = out.evaluations // n
            row = _row(solver, out.x.float().cpu(), None, cost, data.energy, ref, e_ref,
                       (out.log_z, None), e.seed)  # fmt: skip
            row["ess"] = out.ess_history[-1]  # before the last resampling
            row["non_finite"] = out.non_finite
        results.append(row)
    return {"step": step, "n_samples": n, "guidance": None, "floors": floors, "results": results}


def pictures(recipe: Recipe, model: nn.Module, data: TargetData, step) -> dict:
    """samples.png: SNIS-resampled flow samples beside the reference (2-D targets);
    energies.png: histograms of the target energy of the flow's samples, of its reweighted
    samples and of the reference; ramachandran.png (molecules): the (phi, psi) densities."""
    from flowforge.nf.boltzmann import importance_weights  # noqa: PLC0415

    s = recipe.config.sample
    g = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        x = model.sample(s.n, generator=g)
        log_q = model.log_prob(x).double()
    x = x.float().cpu()
    e_x = data.energy.energy(x.double())
    w = importance_weights(-e_x, log_q.cpu(), recipe.method.energy_cutoff, recipe.method.quantile)
    ref = data.reference(s.n, s.seed)
    e_ref = data.energy.energy(ref.double())
    title = f"{recipe.config.name}, step {step}"
    figures = {}
    if data.dim == 2 and not torch.isneginf(w.log_w).all():
        idx = multinomial_resample(w.log_w, s.n, g)
        figures["samples.png"] = plots.plot_samples(
            x[idx].numpy(), ref.numpy(), title=f"{title}: flow samples resampled by SNIS "
            f"(ESS/n {w.ess / s.n:.2f})"
        )  # fmt: skip
    fig, axes = plots.figure(6, 4)
    ax = axes[0, 0]
    finite = torch.isfinite(e_x)
    lo, hi = torch.quantile(e_ref, 0.001).item(), torch.quantile(e_ref, 0.999).item()
    pad = 0.25 * (hi - lo)
    bins = torch.linspace(lo - pad, hi + pad, 80).numpy()
    ax.hist(e_ref.numpy(), bins, density=True, histtype="step", lw=1.5, label="reference")
    ax.hist(e_x[finite].numpy(), bins, density=True, histtype="step", label="flow")
    if not torch.isneginf(w.log_w).all():
        ax.hist(e_x[finite].numpy(), bins, weights=w.normalized[finite].numpy(), density=True,
                histtype="step", label="flow, reweighted (SNIS)")  # fmt: skip
    ax.set_xlabel("energy E(x) (kT)")
    ax.set_ylabel("density")
    ax.set_title(f"{title}: energies", fontsize=9)
    ax.legend(fontsize=7)
    figures["energies.png"] = fig
    if hasattr(data.energy, "ramachandran"):
        sets = {"reference (MD)": ref, "flow": x}
        if not torch.isneginf(w.log_w).all():
            sets[f"flow, resampled by SNIS (ESS/n {w.ess / s.n:.3f})"] = x[
                multinomial_resample(w.log_w, s.n, g)
            ]
        angles = {k: data.energy.ramachandran(v.double()).numpy() for k, v in sets.items()}
        figures["ramachandran.png"] = plots.plot_ramachandran(angles, title=title)
    return figures


def check_target_settings(config: RunConfig) -> None:
    """ConfigError for data settings a target does not read."""
    d = config.data
    if d.path is not None or d.conditional or d.autoencoder is not None:
        raise ConfigError(
            f"data.name={d.name!r} is a Boltzmann target; drop data.path, data.conditional "
            "and data.autoencoder (a target is its energy)."
        )
    if d.n_train < 2:
        raise ConfigError(f"data.n_train={d.n_train!r} must be >= 2 (training samples).")

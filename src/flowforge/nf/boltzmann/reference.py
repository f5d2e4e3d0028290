"""Reference samples of energies without an exact sampler: long MALA chains, seeded and cached.

``reference_samples(energy, n)`` runs ``chains`` Metropolis-adjusted Langevin chains from
``init`` (or N(0, I)), discards ``burn_in`` steps, then keeps every ``thin``-th state until
``n`` samples are collected; the step size adapts during burn-in towards 60 % acceptance and is
frozen afterwards (so the kept chain is a valid MCMC). Results are cached in ``cache_dir``
(default ``~/.cache/flowforge/boltzmann``) under a name holding the energy, the settings and
the seed, as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from flowforge.nf.boltzmann.energies import Energy, energy_and_grad
from flowforge.nf.boltzmann.smc import mala_step
from flowforge.utils.io import atomic_path

__all__ = ["default_cache_dir", "mala_chains", "reference_samples"]


def default_cache_dir() -> Path:
    """``$FLOWFORGE_CACHE/boltzmann`` or ``~/.cache/flowforge/boltzmann``."""
    root = os.environ.get("FLOWFORGE_CACHE") or Path.home() / ".cache" / "flowforge"
    return Path(root) / "boltzmann"


def mala_chains(
    energy: Energy,
    x: Tensor,
    steps: int,
    step_size: float,
    adapt: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float, float]:
    """Run MALA chains from ``x`` (B, D) for ``steps`` moves.

    Returns:
        ``(x, step size at the end, mean acceptance)``; ``adapt`` moves the step size towards
        60 % acceptance after every move (burn-in only: an adapting chain is not stationary).
    """

    def at(y):
        e, g = energy_and_grad(energy.energy, y)
        return e.double(), g, None

    e, g, _ = at(x)
    h, accepted = step_size, 0.0
    for _ in range(steps):
        ok, y, e_y, g_y, _ = mala_step(x, e, g, at, h, True, generator)
        x = torch.where(ok[:, None], y, x)
        e, g = torch.where(ok, e_y, e), torch.where(ok[:, None], g_y, g)
        rate = ok.double().mean().item()
        accepted += rate
        if adapt:
            h *= math.exp(rate - 0.6)
    return x, h, accepted / max(steps, 1)


def reference_samples(
    energy: Energy,
    n: int,
    chains: int = 1000,
    burn_in: int = 2000,
    thin: int = 10,
    step_size: float = 1e-3,
    init: Tensor | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Tensor:
    """``n`` reference samples (n, D) of ``energy`` by long MALA runs (exact ones if it has
    them), cached.

    Example:
        >>> from flowforge.nf.boltzmann.energies import DoubleWellParticles
        >>> import tempfile
        >>> x = reference_samples(DoubleWellParticles(), 200, chains=100, burn_in=200, thin=5,
        ...                       cache_dir=tempfile.mkdtemp())
        >>> x.shape
        torch.Size([200, 8])
    """
    g = torch.Generator().manual_seed(seed)
    if energy.exact:
        return energy.sample(n, g)
    settings = dict(
        energy=type(energy).__name__,
        params={k: v for k, v in vars(energy).items() if isinstance(v, int | float | str)},
        n=n, chains=chains, burn_in=burn_in, thin=thin, step_size=step_size, seed=seed,
        init=None if init is None else hashlib.sha256(init.numpy().tobytes()).hexdigest()[:12],
    )  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / f"{energy.name}-{key}.safetensors"
    if path.is_file():
        return load_file(path)["x"]
    x = torch.randn((chains, energy.dim), generator=g) if init is None else init
    x, h, _ = mala_chains(energy, x, burn_in, step_size, adapt=True, generator=g)
    kept = []
    while sum(len(k) for k in kept) < n:
        x, _, _ = mala_chains(energy, x, thin, h, generator=g)
        kept.append(x.clone())
    samples = torch.cat(kept)[:n].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a killed run leaves no half-written cache
        save_file({"x": samples}, tmp)
    return samples

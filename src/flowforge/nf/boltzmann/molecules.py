"""A real molecule: alanine dipeptide in vacuum (Amber ff96 through OpenMM), its molecular
dynamics and its Ramachandran angles.

``AlanineDipeptide`` is an ``Energy`` on the 66 Cartesian coordinates (nm) of its 22 atoms, in
kT at ``temperature``, with gradients from OpenMM's forces (grad E = -F / kT);
``molecular_dynamics`` runs seeded Langevin dynamics for training data and reference runs;
``ramachandran`` gives the backbone dihedrals (phi, psi), ``ramachandran_kl`` and
``ramachandran_w2`` compare two sets of them (a histogram KL on the torus, and the exact W2 with
the periodic distance).

OpenMM and openmmtools are optional, from the ``[molecules]`` extra
(``pip install 'flowforge[molecules]'``); the structure and force field are openmmtools'
``AlanineDipeptideVacuum`` test system, not rewritten.

References:
    Eastman et al., OpenMM 8 (2023). Chodera et al., openmmtools.
    Boltzmann Generators (Noé et al., 2019), arXiv:1812.01729 (alanine dipeptide as a target).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowforge.nf.boltzmann.energies import Energy

__all__ = [
    "PHI_ATOMS",
    "PSI_ATOMS",
    "AlanineDipeptide",
    "dihedral",
    "molecular_dynamics",
    "ramachandran",
    "ramachandran_kl",
    "ramachandran_w2",
]

PHI_ATOMS = (4, 6, 8, 14)  # C(ACE) - N - CA - C
PSI_ATOMS = (6, 8, 14, 16)  # N - CA - C - N(NME)
_GAS_CONSTANT = 8.314462618e-3  # kJ / (mol K)


def _openmm():
    try:
        import openmm
        import openmm.unit

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymbar's notes on importing, not ours to show
            from openmmtools import testsystems
    except ImportError as e:
        raise ImportError(
            "alanine dipeptide needs OpenMM and openmmtools, from the [molecules] extra: pip "
            "install 'flowforge[molecules]'."
        ) from e
    return openmm, openmm.unit, testsystems


class _OpenMMEnergy(torch.autograd.Function):
    """E(x) in kT by OpenMM, its gradient -F / kT (B, D)."""

    @staticmethod
    def forward(ctx, x: Tensor, molecule: AlanineDipeptide) -> Tensor:
        e, grad = molecule.evaluate(x.detach())
        ctx.save_for_backward(grad.to(x))
        return e.to(x)

    @staticmethod
    def backward(ctx, grad_e: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_e[:, None] * grad, None


class AlanineDipeptide(Energy):
    """Alanine dipeptide in vacuum (22 atoms, 66 coordinates in nm), E in kT.

    Args:
        temperature: kelvin (kT = R T).
        threads: CPU threads of OpenMM's context.

    Example:
        >>> mol = AlanineDipeptide()  # doctest: +SKIP
        >>> mol.energy(mol.initial_positions()[None]).shape  # doctest: +SKIP
        torch.Size([1])
    """

    name = "alanine_dipeptide"

    def __init__(self, temperature: float = 300.0, threads: int = 1) -> None:
        openmm, unit, testsystems = _openmm()
        self._unit = unit
        self.test_system = testsystems.AlanineDipeptideVacuum(constraints=None)
        self.system = self.test_system.system
        self.temperature = temperature
        self.kT = _GAS_CONSTANT * temperature  # kJ / mol
        self.dim = 3 * self.system.getNumParticles()
        platform = openmm.Platform.getPlatformByName("CPU")
        self.context = openmm.Context(
            self.system, openmm.VerletIntegrator(0.001), platform, {"Threads": str(threads)}
        )

    def initial_positions(self) -> Tensor:
        """(66,) openmmtools' starting structure, in nm."""
        pos = self.test_system.positions.value_in_unit(self._unit.nanometer)
        return torch.tensor(np.asarray(pos), dtype=torch.float64).flatten()

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(E (B,) in kT, grad E (B, D)) in float64; non-finite rows give NaN."""
        u = self._unit
        x_np = x.detach().double().cpu().numpy().reshape(len(x), -1, 3)
        e = np.full(len(x), np.nan)
        grad = np.zeros((len(x), self.dim))
        for i, pos in enumerate(x_np):
            if not np.isfinite(pos).all():
                continue
            self.context.setPositions(pos)
            state = self.context.getState(getEnergy=True, getForces=True)
            e[i] = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / self.kT
            forces = state.getForces(asNumpy=True).value_in_unit(
                u.kilojoule_per_mole / u.nanometer
            )
            grad[i] = -np.asarray(forces).reshape(-1) / self.kT
        bad = ~np.isfinite(e) | ~np.isfinite(grad).all(1)
        e[bad], grad[bad] = np.nan, 0.0
        return torch.from_numpy(e), torch.from_numpy(grad)

    def energy(self, x: Tensor) -> Tensor:
        return _OpenMMEnergy.apply(x, self)


def molecular_dynamics(
    molecule: AlanineDipeptide,
    frames: int,
    every: int = 100,
    burn_in: int = 10_000,
    step_fs: float = 1.0,
    friction: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> Tensor:
    """``frames`` (frames, D) positions (nm) of Langevin dynamics at the molecule's temperature,
    one every ``every`` steps of ``step_fs`` femtoseconds after ``burn_in`` steps, from the
    initial structure with seeded velocities and noise (LangevinMiddleIntegrator, ``friction``
    per picosecond)."""
    openmm, u, _ = _openmm()
    integrator = openmm.LangevinMiddleIntegrator(
        molecule.temperature * u.kelvin, friction / u.picosecond, step_fs * u.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)  # OpenMM reads 0 as "pick one at random"
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(molecule.system, integrator, platform, {"Threads": "1"})
    context.setPositions(molecule.test_system.positions)
    context.setVelocitiesToTemperature(molecule.temperature * u.kelvin, seed + 1)
    integrator.step(burn_in)
    out = np.empty((frames, molecule.dim))
    for k in tqdm(range(frames), desc="MD", unit="frame", disable=not progress, leave=False):
        integrator.step(every)
        pos = context.getState(getPositions=True).getPositions(asNumpy=True)
        out[k] = np.asarray(pos.value_in_unit(u.nanometer)).reshape(-1)
    return torch.from_numpy(out)


def dihedral(x: Tensor, atoms: tuple[int, int, int, int]) -> Tensor:
    """Dihedral angles (n,) in (-pi, pi] of the four ``atoms`` of flat (n, 3 N) positions.

    Example:
        >>> x = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1]])  # a right angle
        >>> round(dihedral(x, (0, 1, 2, 3)).item(), 4)
        -1.5708
    """
    p = x.double().reshape(len(x), -1, 3)[:, list(atoms)]  # (n, 4, 3)
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1 = b1 / b1.norm(dim=1, keepdim=True)
    v = b0 - (b0 * b1).sum(1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(1, keepdim=True) * b1
    return torch.atan2((torch.cross(b1, v, dim=1) * w).sum(1), (v * w).sum(1))


def ramachandran(x: Tensor) -> Tensor:
    """(n, 2) backbone dihedrals (phi, psi) of alanine dipeptide positions (n, 66)."""
    return torch.stack([dihedral(x, PHI_ATOMS), dihedral(x, PSI_ATOMS)], 1)


def ramachandran_kl(
    reference: Tensor, angles: Tensor, weights: Tensor | None = None, bins: int = 36
) -> float:
    """KL(P_reference || Q) in nats of the two (phi, psi) histograms on a ``bins`` x ``bins``
    grid of the torus (``weights``: normalised weights of ``angles``; empty bins of Q get
    1e-6 of the mass, so the KL stays finite and penalises missed basins)."""
    edges = torch.linspace(-math.pi, math.pi, bins + 1, dtype=torch.float64)

    def hist(a: Tensor, w: Tensor | None) -> Tensor:
        i = torch.bucketize(a[:, 0].double().contiguous(), edges[1:-1])
        j = torch.bucketize(a[:, 1].double().contiguous(), edges[1:-1])
        w = torch.ones(len(a), dtype=torch.float64) if w is None else w.double()
        h = torch.zeros(bins * bins, dtype=torch.float64).index_add_(0, i * bins + j, w)
        return h / h.sum()

    p, q = hist(reference, None), hist(angles, weights)
    q = (q + 1e-6) / (1 + 1e-6 * bins * bins)
    keep = p > 0
    return float((p[keep] * (p[keep] / q[keep]).log()).sum())


def ramachandran_w2(reference: Tensor, angles: Tensor) -> float:
    """Exact W2 between two (phi, psi) sets with the periodic distance of the torus (POT)."""
    import ot  # noqa: PLC0415 (POT loads slowly)

    a, b = reference.double().numpy(), angles.double().numpy()
    d = np.abs(a[:, None, :] - b[None, :, :])
    cost = np.minimum(d, 2 * math.pi - d) ** 2
    n, m = len(a), len(b)
    w2 = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost.sum(-1), numItermax=10**7)
    return math.sqrt(max(float(w2), 0.0))

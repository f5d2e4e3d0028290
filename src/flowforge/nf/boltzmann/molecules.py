"""A real molecule: alanine dipeptide in vacuum (Amber ff96 through OpenMM), its molecular
dynamics and its Ramachandran angles.

``AlanineDipeptide`` is an ``Energy`` on the 66 Cartesian coordinates (nm) of its 22 atoms, in
kT at ``temperature``, with gradients from OpenMM's forces (grad E = -F / kT);
``molecular_dynamics`` runs seeded Langevin dynamics for training data and reference runs;
``ramachandran`` gives the backbone dihedrals (phi, psi), ``ramachandran_kl`` and
``ramachandran_w2`` compare two sets of them (a histogram KL on the torus, and the exact W2 with
the periodic distance).

Flows model the molecule in internal coordinates (``InternalCoordinates``: a Z-matrix of bond
lengths, bond angles and torsions built from the bond graph, 3 N - 6 numbers), where the stiff
bonds are separate coordinates and rigid motions are gone. ``AlanineDipeptideInternal`` is the
Boltzmann density in them, exact: E(x(z)) - log J(z) with the Z-matrix volume element
J = prod b^2 sin(theta); each torsion is cut at its least populated angle, so the density lives in
a box and a flow on R^D is a proper proposal (samples outside the box get weight zero).

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
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from flowforge.nf.boltzmann.energies import Energy
from flowforge.nf.boltzmann.reference import default_cache_dir
from flowforge.utils.io import atomic_path

__all__ = [
    "PHI_ATOMS",
    "PSI_ATOMS",
    "AlanineDipeptide",
    "AlanineDipeptideInternal",
    "InternalCoordinates",
    "cached_dynamics",
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
        platform: OpenMM platform of the energy and dynamics contexts (``Reference`` is the
            fastest for 22 atoms on a CPU: 67k Langevin steps/s here, ``CPU`` 1.5k).

    Example:
        >>> mol = AlanineDipeptide()  # doctest: +SKIP
        >>> mol.energy(mol.initial_positions()[None]).shape  # doctest: +SKIP
        torch.Size([1])
    """

    name = "alanine_dipeptide"

    def __init__(self, temperature: float = 300.0, platform: str = "Reference") -> None:
        openmm, unit, testsystems = _openmm()
        self._unit = unit
        self.test_system = testsystems.AlanineDipeptideVacuum(constraints=None)
        self.system = self.test_system.system
        self.temperature = temperature
        self.kT = _GAS_CONSTANT * temperature  # kJ / mol
        self.dim = 3 * self.system.getNumParticles()
        self.platform = platform
        device = openmm.Platform.getPlatformByName(platform)
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001), device)

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
    platform = openmm.Platform.getPlatformByName(molecule.platform)
    context = openmm.Context(molecule.system, integrator, platform)
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


def cached_dynamics(
    molecule: AlanineDipeptide,
    frames: int,
    every: int = 100,
    burn_in: int = 10_000,
    seed: int = 0,
    cache_dir=None,
    progress: bool = True,
) -> Tensor:
    """``molecular_dynamics`` cached as safetensors under ``cache_dir`` (default
    ``default_cache_dir()``), keyed by its settings; written atomically."""
    key = f"T{molecule.temperature:g}-n{frames}-every{every}-burn{burn_in}-seed{seed}"
    path = Path(cache_dir or default_cache_dir()) / f"{molecule.name}-md-{key}.safetensors"
    if path.is_file():
        return load_file(path)["x"]
    x = molecular_dynamics(molecule, frames, every, burn_in, seed=seed, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"x": x.contiguous()}, tmp)
    return x


def _angle(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Angles (B,) at ``b`` of the triangles (a, b, c) of (B, 3) points."""
    u, v = a - b, c - b
    return torch.atan2(torch.cross(u, v, dim=1).norm(dim=1), (u * v).sum(1))


def _place(a: Tensor, b: Tensor, c: Tensor, bond: Tensor, angle: Tensor, torsion: Tensor):
    """The point d (B, 3) with |d - c| = bond, angle (d, c, b) = angle and torsion
    (d, c, b, a) = torsion (natural extension reference frame)."""
    bc = c - b
    bc = bc / bc.norm(dim=1, keepdim=True)
    n = torch.cross(b - a, bc, dim=1)
    n = n / n.norm(dim=1, keepdim=True)
    m = torch.cross(n, bc, dim=1)
    across = bond * angle.sin()
    d = torch.stack([-bond * angle.cos(), across * torsion.cos(), across * torsion.sin()], 1)
    return c + d[:, :1] * bc + d[:, 1:2] * m + d[:, 2:] * n


class InternalCoordinates:
    """A Z-matrix of a molecule from its bond graph: Cartesian positions (B, 3 N) to 3 N - 6
    internal coordinates and back, with the volume element.

    Atoms are placed in breadth-first order from ``root``: the second on the x axis, the third
    in the xy plane, every later atom i by its bond to a placed neighbour j, the angle (i, j, k)
    and the torsion (i, j, k, l) with k, l placed atoms near j. The coordinates come atom by
    atom, three per atom: ``[b_1, b_2, theta_2, (b_i, theta_i, phi_i) for i = 3 .. N - 1]``
    (so a flow with 3 coordinates per token sees one atom per token); the torsions are shifted
    by ``offsets`` and wrapped to (-pi, pi] (``to_internal``), so a cut can sit where the
    molecule rarely is. Rigid motions are dropped: ``to_cartesian(to_internal(x))`` is x up to a
    rotation and a translation.

    The Cartesian volume element is the product of spherical ones, dx = (translation) (rotation)
    prod_i b_i^2 sin(theta_i) dz (the first bond carries b^2 alone), so a density p(x) invariant
    under rigid motions is p(x(z)) J(z) in z, with ``log_jacobian``'s J.

    Args:
        bonds: pairs of bonded atom indices.
        n_atoms: N.
        root: the first atom.

    Example:
        >>> ic = InternalCoordinates([(0, 1), (1, 2), (2, 3)], 4)
        >>> x = torch.tensor([[0.0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1]])
        >>> [round(v, 4) for v in ic.to_internal(x)[0].tolist()]  # b1, b2, theta2, b3 theta3 phi3
        [1.0, 1.0, 1.5708, 1.0, 1.5708, 1.5708]
    """

    def __init__(self, bonds, n_atoms: int, root: int = 0) -> None:
        graph: dict[int, list[int]] = {i: [] for i in range(n_atoms)}
        for i, j in bonds:
            graph[int(i)].append(int(j))
            graph[int(j)].append(int(i))
        order, parent = [root], {root: -1}
        for i in order:  # breadth-first
            for j in sorted(graph[i]):
                if j not in parent:
                    parent[j] = i
                    order.append(j)
        if len(order) != n_atoms or n_atoms < 4:
            raise ValueError(
                f"bonds connect {len(order)} of n_atoms={n_atoms} atoms; a Z-matrix needs one "
                "connected molecule of at least 4 atoms."
            )
        if parent[order[2]] != order[1]:  # the third atom bonded to the second, if any is
            nxt = [j for j in graph[order[1]] if j != root]
            if nxt:
                order.remove(nxt[0])
                order.insert(2, nxt[0])
                parent[nxt[0]] = order[1]
        placed: list[int] = order[:3]
        refs = []
        for i in order[3:]:
            j = parent[i]
            near = lambda a, skip: (  # noqa: E731  placed atoms bonded to a, then the rest
                [p for p in placed if p in graph[a] and p not in skip]
                + [p for p in placed if p not in graph[a] and p not in skip]
            )
            k = near(j, {i, j})[0]
            l_ = (near(k, {i, j, k}) + near(j, {i, j, k}))[0]
            refs.append((i, j, k, l_))
            placed.append(i)
        self.n_atoms, self.order, self.refs = n_atoms, order, refs
        self.dim = 3 * n_atoms - 6
        rest = torch.arange(3, self.dim, 3)  # where atom 3 onwards start
        self.bonds = torch.cat([torch.tensor([0, 1]), rest])
        self.angles = torch.cat([torch.tensor([2]), rest + 1])
        self.torsions = rest + 2
        self.offsets = torch.zeros(len(self.torsions), dtype=torch.float64)

    def to_internal(self, x: Tensor) -> Tensor:
        """(B, 3 N - 6) internal coordinates of (B, 3 N) positions."""
        p = x.reshape(len(x), self.n_atoms, 3)
        r, a1, a2 = self.order[:3]
        cols = [(p[:, a1] - p[:, r]).norm(dim=1), (p[:, a2] - p[:, a1]).norm(dim=1),
                _angle(p[:, a2], p[:, a1], p[:, r])]  # fmt: skip
        offsets = self.offsets.to(x)
        for n, (i, j, k, l_) in enumerate(self.refs):
            t = dihedral(x, (i, j, k, l_)).to(x) - offsets[n]
            cols += [(p[:, i] - p[:, j]).norm(dim=1), _angle(p[:, i], p[:, j], p[:, k]),
                     torch.remainder(t + math.pi, 2 * math.pi) - math.pi]  # fmt: skip
        return torch.stack(cols, 1)

    def to_cartesian(self, z: Tensor) -> Tensor:
        """(B, 3 N) positions of (B, 3 N - 6) internal coordinates (the root at the origin, the
        second atom on the x axis, the third in the xy plane); differentiable."""
        t = z[:, self.torsions] + self.offsets.to(z)
        p: list[Tensor | None] = [None] * self.n_atoms
        r, a1, a2 = self.order[:3]
        zero = torch.zeros_like(z[:, 0])
        p[r] = torch.stack([zero, zero, zero], 1)
        p[a1] = torch.stack([z[:, 0], zero, zero], 1)
        p[a2] = p[a1] + torch.stack([-z[:, 1] * z[:, 2].cos(), z[:, 1] * z[:, 2].sin(), zero], 1)
        for n, (i, j, k, l_) in enumerate(self.refs):
            p[i] = _place(p[l_], p[k], p[j], z[:, 3 * n + 3], z[:, 3 * n + 4], t[:, n])
        return torch.stack(p, 1).reshape(len(z), -1)

    def log_jacobian(self, z: Tensor) -> Tensor:
        """log J(z) (B,) = sum 2 log b + sum log sin(theta): the Cartesian volume per unit z."""
        return 2 * z[:, self.bonds].log().sum(1) + z[:, self.angles].sin().log().sum(1)

    def in_box(self, z: Tensor) -> Tensor:
        """(B,) bonds > 0, angles in (0, pi), torsions in (-pi, pi]: the support of z."""
        b, a, t = z[:, self.bonds], z[:, self.angles], z[:, self.torsions]
        return (
            (b > 0).all(1) & ((a > 0) & (a < math.pi)).all(1)
            & ((t > -math.pi) & (t <= math.pi)).all(1)
        )  # fmt: skip

    def cut_torsions(self, x: Tensor, bins: int = 36) -> None:
        """Shift every torsion's cut to the centre of its least populated of ``bins`` angle bins
        among the positions ``x`` (sets ``offsets``)."""
        self.offsets = torch.zeros(len(self.torsions), dtype=torch.float64)
        t = self.to_internal(x.double())[:, self.torsions]
        idx = ((t + math.pi) / (2 * math.pi) * bins).long().clamp(0, bins - 1)
        counts = torch.zeros(len(self.torsions), bins, dtype=torch.float64)
        counts.scatter_add_(1, idx.T, torch.ones_like(idx.T, dtype=torch.float64))
        self.offsets = (counts.argmin(1).double() + 0.5) * 2 * math.pi / bins


class AlanineDipeptideInternal(Energy):
    """Alanine dipeptide's Boltzmann density in the internal coordinates of its Z-matrix
    (60 numbers: 21 bonds, 20 angles, 19 torsions), exact: E(z) = E(x(z)) - log J(z) in kT,
    +inf outside the box of ``InternalCoordinates.in_box``.

    Args:
        offsets: the torsion cuts (19,); None: at the least populated angles of
            ``cut_frames`` cached frames of molecular dynamics (seed 0, one every 100 fs: the
            training frames of a run with as many).
        temperature: kelvin.
        cut_frames: frames that place the cuts.
    """

    name = "aldp"

    def __init__(self, offsets=None, temperature: float = 300.0, cut_frames: int = 20_000) -> None:
        self.molecule = AlanineDipeptide(temperature)
        top = self.molecule.test_system.topology
        bonds = [(b[0].index, b[1].index) for b in top.bonds()]
        self.coordinates = InternalCoordinates(bonds, top.getNumAtoms(), root=PHI_ATOMS[2])
        self.dim, self.temperature = self.coordinates.dim, temperature
        if offsets is None:
            self.coordinates.cut_torsions(cached_dynamics(self.molecule, cut_frames, seed=0))
        else:
            self.coordinates.offsets = torch.as_tensor(offsets, dtype=torch.float64)

    def settings(self) -> dict:
        """What rebuilds this target: the torsion cuts."""
        return {"offsets": self.coordinates.offsets.tolist(), "temperature": self.temperature}

    def energy(self, z: Tensor) -> Tensor:
        ok = self.coordinates.in_box(z.detach())
        x = self.coordinates.to_cartesian(z)
        e = self.molecule.energy(x) - self.coordinates.log_jacobian(z)
        return torch.where(ok, e, torch.full_like(e, math.inf))

    def to_internal(self, x: Tensor) -> Tensor:
        """Internal coordinates (B, 60) of Cartesian positions (B, 66)."""
        return self.coordinates.to_internal(x)

    def ramachandran(self, z: Tensor) -> Tensor:
        """(B, 2) (phi, psi) of internal coordinates."""
        return ramachandran(self.coordinates.to_cartesian(z.double()))

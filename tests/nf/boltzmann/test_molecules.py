"""Alanine dipeptide through OpenMM: energies and forces agree, dynamics stay in the known
basins, and the Ramachandran metrics have their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.nf.boltzmann.molecules import (
    dihedral,
    ramachandran,
    ramachandran_kl,
    ramachandran_w2,
)


@pytest.fixture(scope="module")
def molecule():
    pytest.importorskip("openmm")
    pytest.importorskip("openmmtools")
    from flowforge.nf.boltzmann.molecules import AlanineDipeptide

    return AlanineDipeptide()


def test_forces_are_the_energy_gradient(molecule):
    """OpenMM's forces are -grad E: central differences of its energies (in kT) agree."""
    x0 = molecule.initial_positions()[None]
    x = x0.clone().requires_grad_(True)
    molecule.energy(x).sum().backward()
    for k in (5, 20, 40, 65):
        step = torch.zeros_like(x0)
        step[0, k] = 1e-3  # OpenMM's CPU platform is single precision: no smaller steps
        fd = (molecule.energy(x0 + step) - molecule.energy(x0 - step)) / 2e-3
        assert x.grad[0, k].item() == pytest.approx(fd.item(), rel=0.03, abs=0.05)
    bad = molecule.energy(torch.full((1, 66), float("nan"), dtype=torch.float64))
    assert torch.isnan(bad).all()  # a broken sample is NaN, weighted zero downstream


@pytest.mark.slow
def test_dynamics_are_seeded_and_stay_in_the_left_basins(molecule):
    """Langevin MD at 300 K: the same seed gives the same frames, and phi stays negative (the
    C7eq / alpha_R basins hold nearly all the mass of alanine dipeptide in vacuum); the
    mean potential energy lies above the (energy-minimised) initial structure's by the order
    of equipartition's (3N - 6)/2 = 30 kT (measured: 18.6 kT over 4 ps; the modes are not
    harmonic)."""
    from flowforge.nf.boltzmann.molecules import molecular_dynamics

    kw = dict(every=25, burn_in=1000, progress=False)
    a = molecular_dynamics(molecule, 120, seed=3, **kw)
    assert torch.equal(a[:20], molecular_dynamics(molecule, 20, seed=3, **kw))
    angles = ramachandran(a)
    assert (angles[:, 0] < 0).float().mean() > 0.95
    rise = molecule.energy(a).mean() - molecule.energy(molecule.initial_positions()[None])
    assert 0.4 * 30 < rise.item() < 1.6 * 30


def test_dihedral_closed_forms():
    x = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1]])
    assert dihedral(x, (0, 1, 2, 3)).item() == pytest.approx(-math.pi / 2)
    trans = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1, 0, -1, 1, 0]])
    assert abs(dihedral(trans, (0, 1, 2, 3)).item()) == pytest.approx(math.pi)


def test_ramachandran_metrics_vanish_on_equal_sets_and_respect_periodicity():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(400, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    assert ramachandran_kl(a, a) < 1e-3
    assert ramachandran_w2(a, a) == pytest.approx(0.0, abs=1e-9)
    near_edge = torch.tensor([[math.pi - 0.05, 0.0]], dtype=torch.float64)
    across = torch.tensor([[-math.pi + 0.05, 0.0]], dtype=torch.float64)
    assert ramachandran_w2(near_edge, across) == pytest.approx(0.1)  # the short way round

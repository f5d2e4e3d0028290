"""Alanine dipeptide through OpenMM: energies and forces agree, dynamics stay in the known
basins, and the Ramachandran metrics have their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.nf.boltzmann.molecules import (
    InternalCoordinates,
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
        step[0, k] = 1e-5  # the Reference platform computes in double precision
        fd = (molecule.energy(x0 + step) - molecule.energy(x0 - step)) / 2e-5
        assert x.grad[0, k].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-3)
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


# a branched 7-atom molecule: a chain 0-1-2-3-4 with side atoms on 1 and 3
BRANCHED = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (3, 6)]


def _random_molecule(n: int, seed: int) -> torch.Tensor:
    """(n, 21) positions of BRANCHED with bonds of length ~1 in random directions."""
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(n, 7, 3, dtype=torch.float64)
    for i, j in BRANCHED:  # every bond's second atom is new
        d = torch.randn(n, 3, generator=g, dtype=torch.float64)
        length = 0.8 + 0.4 * torch.rand(n, 1, generator=g, dtype=torch.float64)
        p[:, j] = p[:, i] + d / d.norm(dim=1, keepdim=True) * length
    return p.reshape(n, -1)


def test_internal_coordinates_round_trip_up_to_rigid_motion():
    """x -> z -> x keeps every pairwise distance (rigid motions are what is dropped), and
    z -> x -> z is the identity, shifted torsions included."""
    ic = InternalCoordinates(BRANCHED, 7, root=2)
    ic.offsets = torch.linspace(-2.0, 2.5, len(ic.torsions), dtype=torch.float64)
    x = _random_molecule(50, 0)
    z = ic.to_internal(x)
    assert z.shape == (50, 15) and ic.in_box(z).all()
    y = ic.to_cartesian(z)
    dist = lambda v: torch.cdist(v.reshape(-1, 7, 3), v.reshape(-1, 7, 3))  # noqa: E731
    torch.testing.assert_close(dist(y), dist(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(ic.to_internal(y), z, atol=1e-12, rtol=0)


def _euler(a: torch.Tensor) -> torch.Tensor:
    """ZYZ rotation matrix of Euler angles (alpha, beta, gamma)."""

    def rz(t):
        c, s = t.cos(), t.sin()
        o, z = torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([torch.stack([c, -s, z]), torch.stack([s, c, z]),
                            torch.stack([z, z, o])])  # fmt: skip

    def ry(t):
        c, s = t.cos(), t.sin()
        o, z = torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([torch.stack([c, z, s]), torch.stack([z, o, z]),
                            torch.stack([-s, z, c])])  # fmt: skip

    return rz(a[0]) @ ry(a[1]) @ rz(a[2])


def test_internal_volume_element_is_the_jacobian_determinant():
    """The map (translation, ZYZ Euler angles, z) -> x is a bijection of R^21 whose Jacobian
    determinant, by autograd, is sin(beta) J(z): the rotation's Haar density times the Z-matrix
    volume element of ``log_jacobian``."""
    ic = InternalCoordinates(BRANCHED, 7, root=1)
    z = ic.to_internal(_random_molecule(3, 1))
    for row in z:
        ext = torch.tensor([0.3, -0.2, 0.5, 0.4, 1.1, -0.7], dtype=torch.float64)

        def full(v, ext_=ext):
            x = ic.to_cartesian(v[6:][None]).reshape(7, 3)
            return (x @ _euler(v[3:6]).T + v[:3]).reshape(-1)

        jac = torch.autograd.functional.jacobian(full, torch.cat([ext, row]))
        expected = ic.log_jacobian(row[None])[0] + ext[4].sin().log()
        assert torch.linalg.slogdet(jac)[1].item() == pytest.approx(expected.item(), abs=1e-9)


def test_internal_coordinates_refuse_a_disconnected_molecule():
    with pytest.raises(ValueError, match="connected molecule"):
        InternalCoordinates([(0, 1), (2, 3)], 4)


def test_alanine_dipeptide_internal_energy_is_the_density_in_z(molecule):
    """E(z) = E(x(z)) - log J(z) on the initial structure, phi and psi read from z, and a
    torsion pushed outside its box has energy +inf (weight zero, not an error)."""
    from flowforge.nf.boltzmann.molecules import AlanineDipeptideInternal

    target = AlanineDipeptideInternal(offsets=torch.full((19,), 0.5))
    x = molecule.initial_positions()[None]
    z = target.to_internal(x)
    assert z.shape == (1, 60)
    e = target.energy(z)
    expected = molecule.energy(x) - target.coordinates.log_jacobian(z)
    assert e.item() == pytest.approx(expected.item(), abs=1e-6)
    torch.testing.assert_close(target.ramachandran(z), ramachandran(x))
    out = z.clone()
    out[0, target.coordinates.torsions[0]] = 3.5
    assert target.energy(out).item() == math.inf
    assert target.settings()["offsets"] == [0.5] * 19

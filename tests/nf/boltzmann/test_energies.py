"""Energies against known answers: normalisers, exact samplers, closed-form configurations."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.nf.boltzmann import (
    DoubleWellParticles,
    GaussianMixture,
    LennardJones,
    ManyWell,
    energy_and_grad,
    reference_samples,
)


def test_manywell_log_z_matches_fab():
    """ManyWell-32's log Z by quadrature equals FAB's published 164.6957."""
    assert ManyWell().log_z == pytest.approx(164.6957, abs=1e-3)


def test_gmm40_is_normalised_and_its_sampler_has_the_mixture_moments():
    gmm = GaussianMixture()
    grid = torch.arange(
        -48, 48, 0.2, dtype=torch.float64
    )  # Riemann sums of Gaussians converge fast
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    mass = torch.exp(-gmm.energy(torch.stack([xx, yy], -1).reshape(-1, 2))).sum() * 0.2**2
    assert mass.item() == pytest.approx(1.0, abs=1e-4)  # log Z = 0
    x = gmm.sample(200_000, torch.Generator().manual_seed(0)).double()
    means = gmm.means.double()
    cov = torch.cov(means.T, correction=0) + gmm.std**2 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(x.mean(0), means.mean(0), atol=0.15)
    assert torch.allclose(torch.cov(x.T), cov, rtol=0.02, atol=4.0)  # mode counts vary


def test_manywell_sampler_has_the_quadrature_entropy():
    """E_p[E + log Z] over exact samples is the entropy, computed by 1-D quadrature."""
    well = ManyWell(dim=4, a=1.0, b=4.0)
    x = well.sample(200_000, torch.Generator().manual_seed(0)).double()
    entropy_mc = (well.energy(x) + well.log_z).mean().item()
    grid = torch.linspace(-6, 6, 120001, dtype=torch.float64)
    log_p1 = -(grid**4) + well.b * grid**2 + well.a * grid
    log_p1 = log_p1 - torch.logsumexp(log_p1, 0) - math.log(grid[1] - grid[0])
    h_1 = -torch.trapezoid(log_p1.exp() * log_p1, grid).item()
    h_2 = 0.5 * math.log(2 * math.pi * math.e)
    assert entropy_mc == pytest.approx(2 * (h_1 + h_2), abs=0.02)


def test_particle_energies_at_known_configurations():
    dw = DoubleWellParticles()
    square = torch.tensor([[-2.0, -2.0, 2.0, -2.0, 2.0, 2.0, -2.0, 2.0]])  # sides at d0 = 4
    r = 4 * math.sqrt(2) - 4
    assert dw.energy(square).item() == pytest.approx((-4 * r**2 + 0.9 * r**4), rel=1e-5)
    assert dw.energy(square + 3.0).item() > dw.energy(square).item()  # the CoM Gaussian
    # LJ-13 icosahedron (12 atoms at distance R from the centre atom): the pure LJ minimum
    # is -44.3268 (Wales & Doye); with the harmonic pull the minimiser shrinks slightly.
    phi = (1 + math.sqrt(5)) / 2
    verts = torch.tensor(
        [[0, s1, s2 * phi] for s1 in (-1, 1) for s2 in (-1, 1)]
        + [[s1, s2 * phi, 0] for s1 in (-1, 1) for s2 in (-1, 1)]
        + [[s2 * phi, 0, s1] for s1 in (-1, 1) for s2 in (-1, 1)],
        dtype=torch.float64,
    )
    unit = verts / verts.norm(dim=1, keepdim=True)
    lj = LennardJones(oscillator=0.0)
    best = min(
        lj.energy(torch.cat([torch.zeros(1, 3), R * unit]).reshape(1, -1)).item()
        for R in torch.linspace(0.95, 1.05, 201).tolist()
    )
    assert best == pytest.approx(-44.3268, abs=0.5)  # the unrelaxed icosahedron: -44.0


def test_gradients_are_finite_and_match_finite_differences():
    torch.manual_seed(0)
    for energy in (DoubleWellParticles(), LennardJones(particles=4), ManyWell(dim=4)):
        x = torch.randn(3, energy.dim, dtype=torch.float64) * 1.5
        _, g = energy_and_grad(energy.energy, x)
        eps = 1e-6
        step = torch.zeros_like(x)
        step[:, 0] = eps
        fd = (energy.energy(x + step) - energy.energy(x - step)) / (2 * eps)
        assert torch.allclose(g[:, 0], fd, rtol=1e-4, atol=1e-6)


def test_reference_runs_are_cached_and_follow_the_target(tmp_path):
    """A MALA reference of DW-4: cached on disk (the second call reads it back), and its mean
    energy matches SNIS from a wide Gaussian."""
    dw = DoubleWellParticles()
    kw = dict(chains=256, burn_in=300, thin=5, cache_dir=tmp_path)
    x = reference_samples(dw, 2000, **kw)
    assert len(list(tmp_path.iterdir())) == 1
    assert torch.equal(reference_samples(dw, 2000, **kw), x)
    from flowforge.nf.boltzmann import DiagonalGaussian, snis

    q = DiagonalGaussian(torch.zeros(8), torch.full((8,), 2.5))
    drawn = snis(q, dw, 200_000, generator=torch.Generator().manual_seed(0))
    e_is = drawn.weights.expectation(drawn.energy).item()
    assert dw.energy(x).mean().item() == pytest.approx(e_is, abs=0.3)

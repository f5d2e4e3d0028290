"""Boltzmann sampling with normalizing flows: energies, importance sampling, SMC, training.

A flow q with exact density proposes x; weights w = exp(-E(x)) / q(x) make its samples those of
p(x) ∝ exp(-E(x)) (``snis``), or annealed SMC with Langevin moves carries them there (``smc``).
Flows are trained by maximum likelihood on samples, by reverse KL on the energy
(``ReverseKL``), and fine-tuned on their own reweighted samples (``self_improve``). Any
``NormalizingFlow`` of ``flowforge.nf`` is a proposal, zuko's included.
"""

from flowforge.nf.boltzmann.energies import (
    DoubleWellParticles,
    Energy,
    GaussianMixture,
    LennardJones,
    ManyWell,
    energy_and_grad,
)
from flowforge.nf.boltzmann.reference import mala_chains, reference_samples
from flowforge.nf.boltzmann.smc import SMCResult, mala_step, smc
from flowforge.nf.boltzmann.snis import DiagonalGaussian, ImportanceSamples, StandardizedFlow, snis
from flowforge.nf.boltzmann.training import (
    ReverseKL,
    RoundResult,
    SelfImprovementLoss,
    TeacherRegularisedNLL,
    self_improve,
)
from flowforge.nf.boltzmann.transfer import fit_family
from flowforge.nf.boltzmann.weights import (
    NoWeightError,
    Weights,
    importance_weights,
    kish_ess,
    log_z_estimate,
    multinomial_resample,
    systematic_resample,
)

__all__ = [
    "DiagonalGaussian",
    "DoubleWellParticles",
    "Energy",
    "GaussianMixture",
    "ImportanceSamples",
    "LennardJones",
    "ManyWell",
    "NoWeightError",
    "ReverseKL",
    "RoundResult",
    "SMCResult",
    "SelfImprovementLoss",
    "StandardizedFlow",
    "TeacherRegularisedNLL",
    "Weights",
    "energy_and_grad",
    "fit_family",
    "importance_weights",
    "kish_ess",
    "log_z_estimate",
    "mala_chains",
    "mala_step",
    "multinomial_resample",
    "reference_samples",
    "self_improve",
    "smc",
    "snis",
    "systematic_resample",
]

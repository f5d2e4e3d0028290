"""Probability paths, stochastic interpolants, couplings and parameterisation conversions."""

from flowforge.paths.affine import (
    PARAMETERIZATIONS,
    AffinePath,
    CondOTPath,
    CosinePath,
    Parameterization,
    PolynomialPath,
    VPPath,
)
from flowforge.paths.base import PathSample, ProbPath
from flowforge.paths.conversions import ConvertedField
from flowforge.paths.couplings import (
    ExactOTCoupling,
    IndependentCoupling,
    PairCoupling,
    SinkhornCoupling,
)
from flowforge.paths.edm import (
    Denoiser,
    DenoiserAsVelocity,
    EDMPrecond,
    VelocityAsDenoiser,
    sigma_from_t,
    t_from_sigma,
)
from flowforge.paths.interpolant import (
    BrownianGamma,
    BSquaredGamma,
    GammaSchedule,
    InterpolantKind,
    InterpolantSample,
    SineSquaredGamma,
    StochasticInterpolant,
    ZeroGamma,
)
from flowforge.paths.pfgmpp import PFGMPPKernel
from flowforge.paths.time import shift_time

__all__ = [
    "AffinePath",
    "BSquaredGamma",
    "BrownianGamma",
    "CondOTPath",
    "ConvertedField",
    "CosinePath",
    "Denoiser",
    "DenoiserAsVelocity",
    "EDMPrecond",
    "ExactOTCoupling",
    "GammaSchedule",
    "IndependentCoupling",
    "InterpolantKind",
    "InterpolantSample",
    "PARAMETERIZATIONS",
    "PFGMPPKernel",
    "PairCoupling",
    "Parameterization",
    "PathSample",
    "PolynomialPath",
    "ProbPath",
    "SineSquaredGamma",
    "SinkhornCoupling",
    "StochasticInterpolant",
    "VPPath",
    "VelocityAsDenoiser",
    "ZeroGamma",
    "shift_time",
    "sigma_from_t",
    "t_from_sigma",
]

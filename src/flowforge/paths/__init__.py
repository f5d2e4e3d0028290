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
from flowforge.paths.time import shift_time

__all__ = [
    "PARAMETERIZATIONS",
    "AffinePath",
    "CondOTPath",
    "ConvertedField",
    "CosinePath",
    "ExactOTCoupling",
    "IndependentCoupling",
    "PairCoupling",
    "SinkhornCoupling",
    "Parameterization",
    "PathSample",
    "PolynomialPath",
    "ProbPath",
    "VPPath",
    "shift_time",
]

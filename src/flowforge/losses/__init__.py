"""Training objectives, regression distances and time densities."""

from flowforge.losses.distances import mse, pseudo_huber
from flowforge.losses.edm import EDMLoss
from flowforge.losses.fm import Distance, FlowMatchingLoss
from flowforge.losses.interpolant import InterpolantLoss, InterpolantTarget
from flowforge.losses.time_samplers import (
    CosMapTime,
    LogitNormalTime,
    ModeTime,
    ShiftedTime,
    TimeDensity,
    UniformTime,
    UShapedTime,
)

__all__ = [
    "CosMapTime",
    "Distance",
    "EDMLoss",
    "FlowMatchingLoss",
    "InterpolantLoss",
    "InterpolantTarget",
    "LogitNormalTime",
    "ModeTime",
    "ShiftedTime",
    "TimeDensity",
    "UShapedTime",
    "UniformTime",
    "mse",
    "pseudo_huber",
]

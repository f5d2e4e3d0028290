"""Training objectives (flow matching, interpolants, EDM, inpainting, SymmFlow), regression
distances and time densities."""

from flowforge.losses.distances import mse, pseudo_huber
from flowforge.losses.edm import EDMLoss
from flowforge.losses.fm import Distance, FlowMatchingLoss
from flowforge.losses.inpainting import InpaintingLoss
from flowforge.losses.interpolant import InterpolantLoss, InterpolantTarget
from flowforge.losses.symmflow import SymmFlowLoss, channels_to_masks, masks_to_channels
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
    "InpaintingLoss",
    "InterpolantLoss",
    "InterpolantTarget",
    "LogitNormalTime",
    "ModeTime",
    "ShiftedTime",
    "SymmFlowLoss",
    "TimeDensity",
    "UShapedTime",
    "UniformTime",
    "channels_to_masks",
    "masks_to_channels",
    "mse",
    "pseudo_huber",
]

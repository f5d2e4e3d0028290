"""Datasets that work offline: seeded 2-D toy samplers and a user's own .csv / .npy arrays."""

from flowforge.data.arrays import ArrayDataset, load_array
from flowforge.data.toy2d import (
    checkerboard,
    circles,
    eight_gaussians,
    eight_gaussians_params,
    moons,
    pinwheel,
    spirals,
    swiss_roll,
)

__all__ = [
    "ArrayDataset",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "eight_gaussians_params",
    "load_array",
    "moons",
    "pinwheel",
    "spirals",
    "swiss_roll",
]

"""Datasets that work offline: 2-D toys, scikit-learn digits, mnist1d signals, procedural shapes
with segmentation masks, and a user's own .csv / .npy arrays or folder of images."""

from flowforge.data.arrays import ArrayDataset, load_array
from flowforge.data.digits import load_digits_tensor, split_indices
from flowforge.data.images import IMAGE_SUFFIXES, ImageFolder, check_masks, load_image_folder
from flowforge.data.masks import box_masks, inpainting_condition, paste_known
from flowforge.data.mnist1d import make_mnist1d
from flowforge.data.shapes import SHAPE_CLASSES, make_shapes, rasterise_shapes
from flowforge.data.toy2d import (
    checkerboard,
    circles,
    eight_gaussians,
    eight_gaussians_log_prob,
    eight_gaussians_params,
    moons,
    pinwheel,
    spirals,
    swiss_roll,
)

__all__ = [
    "ArrayDataset",
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "SHAPE_CLASSES",
    "box_masks",
    "check_masks",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "eight_gaussians_log_prob",
    "eight_gaussians_params",
    "inpainting_condition",
    "load_array",
    "load_digits_tensor",
    "load_image_folder",
    "make_mnist1d",
    "make_shapes",
    "moons",
    "paste_known",
    "pinwheel",
    "rasterise_shapes",
    "spirals",
    "split_indices",
    "swiss_roll",
]

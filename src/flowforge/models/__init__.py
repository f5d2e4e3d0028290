"""Networks that implement the field contract ``model(x, t, cond=None) -> Tensor``."""

from flowforge.models.classifier import (
    ClassifierConfig,
    ImageClassifier,
    train_classifier,
    transform_task,
)
from flowforge.models.dit import DiTConfig, DiTField, sincos_pos_embed_2d
from flowforge.models.layers import (
    ACTIVATIONS,
    Activation,
    ImageCond,
    SinusoidalEmbedding,
    check_image,
    make_activation,
    parse_image_cond,
)
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.models.unet import UNetConfig, UNetField

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ClassifierConfig",
    "DiTConfig",
    "DiTField",
    "ImageClassifier",
    "ImageCond",
    "MLPConfig",
    "MLPField",
    "SinusoidalEmbedding",
    "UNetConfig",
    "UNetField",
    "check_image",
    "make_activation",
    "parse_image_cond",
    "sincos_pos_embed_2d",
    "train_classifier",
    "transform_task",
]

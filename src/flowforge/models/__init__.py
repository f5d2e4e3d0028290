"""Networks that implement the field contract ``model(x, t, cond=None) -> Tensor``."""

from flowforge.models.layers import ACTIVATIONS, Activation, SinusoidalEmbedding, make_activation
from flowforge.models.mlp import MLPConfig, MLPField

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "MLPConfig",
    "MLPField",
    "SinusoidalEmbedding",
    "make_activation",
]

"""Level-0 helpers: tensors, validation, seeding, atomic I/O."""

from flowforge.utils.checks import (
    check_batch,
    check_choice,
    check_finite,
    check_same_shape,
    check_time,
)
from flowforge.utils.ddp import average_gradients, unwrap_ddp
from flowforge.utils.io import atomic_path, atomic_write
from flowforge.utils.seed import make_generator, seed_everything
from flowforge.utils.tensor import expand_like, per_example, randn_like_gen, wider_float

__all__ = [
    "atomic_path",
    "atomic_write",
    "average_gradients",
    "check_batch",
    "check_choice",
    "check_finite",
    "check_same_shape",
    "check_time",
    "expand_like",
    "make_generator",
    "per_example",
    "randn_like_gen",
    "seed_everything",
    "unwrap_ddp",
    "wider_float",
]

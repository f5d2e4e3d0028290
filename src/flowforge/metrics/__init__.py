"""Sample-based distances between distributions: exact and sliced W2, MMD, energy distance.

Report each beside its finite-sample floor (two fresh target draws), see ``finite_sample_floor``.
"""

from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.mmd import (
    BANDWIDTH_SCALES,
    energy_distance,
    median_bandwidth,
    mmd2_unbiased,
)
from flowforge.metrics.sliced import (
    ControlVariate,
    projected_w2,
    random_directions,
    sliced_wasserstein,
)
from flowforge.metrics.wasserstein import wasserstein2

__all__ = [
    "BANDWIDTH_SCALES",
    "ControlVariate",
    "energy_distance",
    "finite_sample_floor",
    "median_bandwidth",
    "mmd2_unbiased",
    "projected_w2",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein2",
]

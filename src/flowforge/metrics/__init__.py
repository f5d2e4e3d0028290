"""Sample-based distances between distributions (exact and sliced W2, MMD, energy distance) and
image metrics (Frechet distance, precision/recall, accuracy, mIoU, known-pixel error).

Report each beside its finite-sample floor (two fresh target draws), see ``finite_sample_floor``.
"""

from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats
from flowforge.metrics.images import (
    class_accuracy,
    knn_radii,
    known_pixel_error,
    manifold_coverage,
    mean_iou,
    per_class_iou,
    precision_recall,
)
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
    wasserstein2_1d,
)
from flowforge.metrics.wasserstein import wasserstein2

__all__ = [
    "BANDWIDTH_SCALES",
    "ControlVariate",
    "class_accuracy",
    "energy_distance",
    "finite_sample_floor",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "knn_radii",
    "known_pixel_error",
    "manifold_coverage",
    "mean_iou",
    "median_bandwidth",
    "mmd2_unbiased",
    "per_class_iou",
    "precision_recall",
    "projected_w2",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein2",
    "wasserstein2_1d",
]

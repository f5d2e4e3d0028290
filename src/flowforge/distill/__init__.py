"""Few-step generation: reflow (rf++), MeanFlow (+ dispersive regularisers), data-free flow-map
distillation (FreeFlow), TwinFlow, FlowTurbo and blockwise flow matching.

Each method is an objective ``objective(model, x_1, cond, generator) -> (B,)`` for
``flowforge.train.train`` plus its few-step sampler ``<method>_sample(model, x_0, n_steps, cond)``
from noise (t = 0) to data (t = 1). Two-time networks are the ordinary models with ``n_times=2``.
"""

from flowforge.distill.blockwise import (
    BlockwiseField,
    BlockwiseLoss,
    FeatureResidualLoss,
    blockwise_sample,
    segment_boundaries,
    segment_index,
    segment_times,
    split_sizes,
)
from flowforge.distill.blockwise_nets import (
    FeatureMLP,
    FeatureMLPConfig,
    SegmentMLP,
    SegmentMLPConfig,
    random_feature_target,
)
from flowforge.distill.dispersive import (
    capture_features,
    dispersive_covariance,
    dispersive_hinge,
    dispersive_infonce_cos,
    dispersive_infonce_l2,
    dispersive_infonce_l2_dm1,
    pairwise_sq_dist,
)
from flowforge.distill.flowturbo import (
    ConcatRefiner,
    FlowTurboNFE,
    MLPRefiner,
    MLPRefinerConfig,
    Refiner,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
    parse_schedule,
    pseudo_corrector_step,
    refiner_step,
)
from flowforge.distill.freeflow import FreeFlowLoss, freeflow_sample, student_from_teacher
from flowforge.distill.freeflow_targets import (
    correction_loss,
    fake_velocity_loss,
    freeflow_map,
    prediction_target,
    trajectory_residual,
)
from flowforge.distill.meanflow import (
    MeanFlowGuidance,
    MeanFlowLoss,
    TimeInputs,
    average_velocity,
    meanflow_guided_velocity,
    meanflow_sample,
    meanflow_target,
    meanflow_times,
)
from flowforge.distill.reflow import (
    ReflowDistance,
    ReflowLoss,
    ReflowPairs,
    ReflowSampler,
    ReflowWeighting,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
    straightness,
)
from flowforge.distill.twinflow import TwinFlowLoss
from flowforge.distill.twinflow_sampling import (
    twin_delta,
    twin_endpoints,
    twinflow_sample,
    twinflow_time_grid,
)

__all__ = [
    "BlockwiseField",
    "BlockwiseLoss",
    "ConcatRefiner",
    "FeatureMLP",
    "FeatureMLPConfig",
    "FeatureResidualLoss",
    "FlowTurboNFE",
    "FreeFlowLoss",
    "MLPRefiner",
    "MLPRefinerConfig",
    "MeanFlowGuidance",
    "MeanFlowLoss",
    "Refiner",
    "RefinerLoss",
    "ReflowDistance",
    "ReflowLoss",
    "ReflowPairs",
    "ReflowSampler",
    "ReflowWeighting",
    "SegmentMLP",
    "SegmentMLPConfig",
    "TimeInputs",
    "TwinFlowLoss",
    "average_velocity",
    "blockwise_sample",
    "capture_features",
    "correction_loss",
    "dispersive_covariance",
    "dispersive_hinge",
    "dispersive_infonce_cos",
    "dispersive_infonce_l2",
    "dispersive_infonce_l2_dm1",
    "fake_velocity_loss",
    "flowturbo_nfe",
    "flowturbo_sample",
    "freeflow_map",
    "freeflow_sample",
    "init_from_teacher",
    "make_reflow_pairs",
    "meanflow_guided_velocity",
    "meanflow_sample",
    "meanflow_target",
    "meanflow_times",
    "pairwise_sq_dist",
    "parse_schedule",
    "prediction_target",
    "pseudo_corrector_step",
    "random_feature_target",
    "refiner_step",
    "reflow_sample",
    "segment_boundaries",
    "segment_index",
    "segment_times",
    "split_sizes",
    "straightness",
    "student_from_teacher",
    "trajectory_residual",
    "twin_delta",
    "twin_endpoints",
    "twinflow_sample",
    "twinflow_time_grid",
]

"""Settings of the few-step methods: ``RunConfig.distill`` and its validation.

``method.objective`` picks the method; this section holds what only few-step runs need: the
teacher run (reflow, freeflow, flowturbo), reflow's pairs, the two-time share of MeanFlow and
FreeFlow, TwinFlow's weights, FlowTurbo's schedule and refiner, blockwise segments.

Example:
    >>> DistillConfig().teacher is None, FEW_STEP_OBJECTIVES[0]
    (True, 'reflow')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from flowforge.cli.errors import ConfigError

__all__ = [
    "DistillConfig",
    "FEW_STEP_OBJECTIVES",
    "NATIVE_ONLY_OBJECTIVES",
    "TEACHER_OBJECTIVES",
    "TWO_TIME_OBJECTIVES",
    "validate_distill",
]

FEW_STEP_OBJECTIVES: tuple[str, ...] = (
    "reflow",
    "meanflow",
    "freeflow",
    "twinflow",
    "flowturbo",
    "blockwise",
)
TEACHER_OBJECTIVES: tuple[str, ...] = ("reflow", "freeflow", "flowturbo")
TWO_TIME_OBJECTIVES: tuple[str, ...] = ("meanflow", "freeflow", "twinflow")
# networks that are not velocity fields: only their own sampler (sample.solver=fewstep) applies
NATIVE_ONLY_OBJECTIVES: tuple[str, ...] = (*TWO_TIME_OBJECTIVES, "flowturbo")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class DistillConfig:
    """Few-step methods (method.objective = reflow, meanflow, freeflow, twinflow, flowturbo,
    blockwise); the network widths come from ``model``."""

    teacher: str | None = field(
        default=None,
        metadata=_help("reflow/freeflow/flowturbo: directory of a trained fm run (the teacher)"),
    )
    teacher_nfe: int = field(
        default=100, metadata=_help("reflow: Euler steps of the teacher ODE per pair")
    )
    pairs: int = field(default=50000, metadata=_help("reflow: number of (noise, sample) pairs"))
    reflow_sampler: Literal["new", "euler"] = field(
        default="new", metadata=_help("reflow: rf++ sampler re-interpolating to x_0, or Euler")
    )
    flow_map_ratio: float = field(
        default=0.25, metadata=_help("meanflow/freeflow: share of examples with two times s < t")
    )
    adaptive_p: float = field(default=1.0, metadata=_help("meanflow: adaptive weight power p"))
    dispersive_weight: float = field(
        default=0.0, metadata=_help("meanflow: weight of the dispersive (InfoNCE-L2) loss")
    )
    schedule: str = field(
        default="H2P6R4",
        metadata=_help("flowturbo: Heun, pseudo-corrector and refiner steps, e.g. H2P6R4"),
    )
    refiner_hidden: int = field(default=64, metadata=_help("flowturbo: refiner width"))
    refiner_depth: int = field(default=1, metadata=_help("flowturbo: refiner hidden layers"))
    segments: int = field(default=4, metadata=_help("blockwise: number of time segments M"))
    segment_guidance: bool = field(
        default=True, metadata=_help("blockwise: shared feature network conditioning segments")
    )


def validate_distill(
    objective: str,
    d: DistillConfig,
    image: bool = False,
    channels: str = "none",
) -> None:
    """Raise ``ConfigError`` for few-step settings that cannot work.

    Args:
        objective: ``method.objective``.
        d: the ``distill`` section.
        image: whether the run trains on images; then ``channels`` is its ``data.channels``
            (latent few-step runs are refused with the other latent settings).

    Example:
        >>> try:
        ...     validate_distill("reflow", DistillConfig(teacher=None))
        ... except ConfigError as e:
        ...     print(str(e)[:60])
        method.objective='reflow' distils a trained flow: set distil
    """
    if objective not in FEW_STEP_OBJECTIVES:
        return
    if image and channels != "none":
        raise ConfigError(
            f"method.objective={objective!r} with data.channels={channels!r}: few-step image "
            "runs take class labels or nothing; set data.channels=none."
        )
    if image and objective == "blockwise" and d.segment_guidance:
        raise ConfigError(
            "distill.segment_guidance=true: the shared feature network of blockwise runs is an "
            "MLP for vector data; set distill.segment_guidance=false for images."
        )
    if objective in TEACHER_OBJECTIVES and d.teacher is None:
        raise ConfigError(
            f"method.objective={objective!r} distils a trained flow: set "
            "distill.teacher=RUN_DIR (a run trained with method.objective=fm, e.g. "
            "`flowforge train toy2d_fm`)."
        )
    positive = {
        "distill.teacher_nfe": d.teacher_nfe,
        "distill.pairs": d.pairs,
        "distill.refiner_hidden": d.refiner_hidden,
        "distill.refiner_depth": d.refiner_depth,
        "distill.segments": d.segments,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value!r} must be >= 1.")
    if not 0 <= d.flow_map_ratio <= 1:
        raise ConfigError(
            f"distill.flow_map_ratio={d.flow_map_ratio!r} must lie in [0, 1] (0.25 is usual)."
        )
    if d.dispersive_weight < 0:
        raise ConfigError(f"distill.dispersive_weight={d.dispersive_weight!r} must be >= 0.")
    if not re.fullmatch(r"H\d+P\d+R\d+", d.schedule):
        raise ConfigError(
            f"distill.schedule={d.schedule!r} is not of the form H<a>P<b>R<c>; use e.g. H2P6R4."
        )

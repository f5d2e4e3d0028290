"""Guidance: wrappers that steer a conditional field when sampling, and condition dropout."""

from flowforge.guidance.cfg import ClassifierFreeGuidance, null_like, predict_cond_uncond
from flowforge.guidance.dropout import ConditionDropout, drop_condition
from flowforge.guidance.raag import RAAG

__all__ = [
    "RAAG",
    "ClassifierFreeGuidance",
    "ConditionDropout",
    "drop_condition",
    "null_like",
    "predict_cond_uncond",
]

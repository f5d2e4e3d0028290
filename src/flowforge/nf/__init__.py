"""Normalizing flows: exact likelihoods, sampling by inverting a bijection.

``NormalizingFlow`` is the contract (forward -> (z, logdet), inverse, log_prob, sample);
``TransformerFlow`` is TARFlow / STARFlow (causal-transformer affine autoregressive blocks,
sequential and Jacobi decoding, guidance); ``VideoFlow`` is STARFlow-V (per-frame blocks and a
deep frame-causal one, video Jacobi decoding, continuation of given frames); the objective, the
score denoising step and bits per dimension are in ``flowforge.nf.objective``.
"""

from flowforge.nf.base import NormalizingFlow, standard_normal_log_prob
from flowforge.nf.denoiser import DenoisedFlow, residual_denoiser
from flowforge.nf.objective import FlowNLLLoss, bits_per_dim, flow_log_prob, score_denoise
from flowforge.nf.tarflow import (
    AutoregressiveBlock,
    Decoded,
    TransformerFlow,
    TransformerFlowConfig,
    guide,
)
from flowforge.nf.transformer import CausalTransformer, KVCache
from flowforge.nf.video import CausalVideoDenoiser, VideoFlow, VideoFlowConfig

__all__ = [
    "AutoregressiveBlock",
    "CausalTransformer",
    "CausalVideoDenoiser",
    "Decoded",
    "DenoisedFlow",
    "FlowNLLLoss",
    "KVCache",
    "NormalizingFlow",
    "TransformerFlow",
    "TransformerFlowConfig",
    "VideoFlow",
    "VideoFlowConfig",
    "bits_per_dim",
    "flow_log_prob",
    "guide",
    "residual_denoiser",
    "score_denoise",
    "standard_normal_log_prob",
]

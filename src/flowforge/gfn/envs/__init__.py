"""GFlowNet environments: the hypergrid, bit sequences and sets with additive energies."""

from flowforge.gfn.envs.bitseq import BitSequence
from flowforge.gfn.envs.hypergrid import HyperGrid
from flowforge.gfn.envs.sets import SetGeneration, log_elementary_symmetric

__all__ = ["BitSequence", "HyperGrid", "SetGeneration", "log_elementary_symmetric"]

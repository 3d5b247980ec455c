"""sadp-core: spike-aware data pruning for spiking neural networks.

Each epoch, train on a sample of the examples drawn with probability proportional to a
cheap spike-aware bound on their gradient norm, reweighted so that the gradient stays
unbiased. The core is framework-neutral (Array API); adapters connect SpikingJelly,
snnTorch and JAX models through :func:`attach`.

>>> import sadp_core
>>> p = sadp_core.Pruner(num_examples=1000, prune_ratio=0.3, epochs=10, seed=0)
>>> p.budget
700
"""

from .attach import attach
from .errors import SADPError, SADPWarning
from .methods import METHODS
from .pruner import Plan, Pruner, PrunerStats
from .sampling import (
    horvitz_thompson_weights,
    inclusion_probabilities,
    sample_with_replacement,
    systematic_sample,
)
from .schedule import Schedule
from .scores import exact_readout_score, spike_aware_score, trace_norms

__all__ = [
    "METHODS",
    "Plan",
    "Pruner",
    "PrunerStats",
    "SADPError",
    "SADPWarning",
    "Schedule",
    "attach",
    "exact_readout_score",
    "horvitz_thompson_weights",
    "inclusion_probabilities",
    "sample_with_replacement",
    "spike_aware_score",
    "systematic_sample",
    "trace_norms",
]

__version__ = "0.1.0"

"""snnTorch adapter: ``sadp_core.attach(model)`` for networks built from snnTorch neurons.

Works with the explicit-state style (``spk, mem = lif(cur, mem)``) and ``init_hidden=True``,
with ``Leaky``, ``Synaptic``, ``Alpha``, ``RLeaky`` and ``RSynaptic`` (whose ``recurrent``
layer belongs to the neuron and is never the readout), and with the sequence neurons of
snnTorch 1.0 (``LinearLeaky``, whose ``linear`` layer is an ordinary input projection, and
``LeakyParallel``). Per-step losses of ``snntorch.functional`` work once reduced to one
value per example.

Example:
    >>> import torch, snntorch as snn, sadp_core
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), snn.Leaky(beta=0.9, init_hidden=True),
    ...                           torch.nn.Linear(16, 3))
    >>> h = sadp_core.attach(net, num_examples=100, epochs=3)
    >>> h.readout_name
    '2'
    >>> h.detach()
"""

from __future__ import annotations

from typing import Any

import snntorch
from torch import nn

from ._torch import TorchFramework, TorchHandle

__all__ = ["FRAMEWORK", "accepts", "attach"]


def _is_internal(parent: nn.Module, attribute: str, child: nn.Module) -> bool:
    """``RLeaky.recurrent`` and ``RSynaptic.recurrent`` feed a neuron's own spikes back."""
    return isinstance(parent, snntorch.SpikingNeuron) and attribute == "recurrent"


FRAMEWORK = TorchFramework(
    name="snnTorch",
    neuron_types=(snntorch.SpikingNeuron, snntorch.LeakyParallel),
    is_internal=_is_internal,
)


def accepts(model: Any) -> bool:
    """True for a ``torch.nn.Module`` that contains an snnTorch neuron."""
    return isinstance(model, nn.Module) and any(
        isinstance(m, FRAMEWORK.neuron_types) for m in model.modules()
    )


def attach(model: nn.Module, **options: Any) -> TorchHandle:
    """Attach spike-aware pruning to an snnTorch model; see :class:`TorchHandle`."""
    return TorchHandle(model, FRAMEWORK, **options)

"""SpikingJelly adapter: ``sadp_core.attach(model)`` for ``spikingjelly.activation_based`` networks.

Works in multi-step mode (the readout sees ``[T, N, F]``), with ``SeqToANNContainer``
(``[T*N, F]``, time-major) and in single-step loops (``T`` calls of ``[N, F]``), for any
neuron derived from ``BaseNode`` (``IFNode``, ``LIFNode``, ``ParametricLIFNode``, ...), in
MLP and convolutional networks. Remember ``functional.reset_net(net)`` after each batch.

Example:
    >>> import torch, sadp_core
    >>> from spikingjelly.activation_based import layer, neuron
    >>> net = torch.nn.Sequential(layer.Linear(8, 16), neuron.LIFNode(), layer.Linear(16, 3))
    >>> h = sadp_core.attach(net, num_examples=100, epochs=3)
    >>> h.readout_name
    '2'
    >>> h.detach()
"""

from __future__ import annotations

from typing import Any

from spikingjelly.activation_based import neuron
from torch import nn

from ._torch import TorchFramework, TorchHandle

__all__ = ["FRAMEWORK", "accepts", "attach"]

FRAMEWORK = TorchFramework(name="SpikingJelly", neuron_types=(neuron.BaseNode,))


def accepts(model: Any) -> bool:
    """True for a ``torch.nn.Module`` that contains a SpikingJelly neuron."""
    return isinstance(model, nn.Module) and any(
        isinstance(m, FRAMEWORK.neuron_types) for m in model.modules()
    )


def attach(model: nn.Module, **options: Any) -> TorchHandle:
    """Attach spike-aware pruning to a SpikingJelly model; see :class:`TorchHandle`."""
    return TorchHandle(model, FRAMEWORK, **options)

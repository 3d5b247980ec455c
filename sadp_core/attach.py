"""``attach(model)``: find the adapter for a model's framework, lazily.

Only frameworks that are already imported are considered (we look in ``sys.modules``), so
``import sadp_core`` never imports torch or jax. Each adapter module provides
``accepts(model) -> bool`` and ``attach(model, **options)``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .errors import SADPError

__all__ = ["attach"]

_ADAPTERS: tuple[tuple[str, str], ...] = (
    # (framework module that must already be imported, adapter module)
    ("spikingjelly", "sadp_core.adapters.spikingjelly"),
    ("snntorch", "sadp_core.adapters.snntorch"),
    ("jax", "sadp_core.adapters.jax"),
)


def attach(model: Any, **options: Any) -> Any:
    """Attach spike-aware pruning to ``model`` and return its handle (a ``Pruner``).

    Args:
        model: a SpikingJelly or snnTorch ``torch.nn.Module``, or a JAX (flax NNX) model.
        **options: ``num_examples``, ``prune_ratio``, ``epochs``, ``seed``, ``method``,
            ``readout`` and the other options of :class:`sadp_core.Pruner` and the adapter.

    Raises:
        SADPError: when no installed adapter recognises the model.

    Example:
        >>> import sadp_core
        >>> sadp_core.attach(object(), num_examples=10, epochs=1)
        Traceback (most recent call last):
        ...
        sadp_core.errors.SADPError: attach() found no adapter for a model of type object; ...
    """
    tried = []
    for framework, adapter_name in _ADAPTERS:
        if framework not in sys.modules:
            continue
        try:
            adapter = importlib.import_module(adapter_name)
        except ModuleNotFoundError as error:
            if error.name != adapter_name:
                raise
            tried.append(f"{framework} (adapter not available in this version)")
            continue
        if adapter.accepts(model):
            return adapter.attach(model, **options)
        tried.append(framework)
    looked_at = ", ".join(tried) if tried else "none imported"
    raise SADPError(
        f"attach() found no adapter for a model of type {type(model).__name__}; "
        f"frameworks looked at: {looked_at}. Pass a SpikingJelly or snnTorch torch.nn.Module "
        "or a JAX model (import its framework first), or use sadp_core.Pruner directly"
    )

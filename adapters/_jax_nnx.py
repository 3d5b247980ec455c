"""The flax NNX side of the JAX adapter: finding the layers to tap, and tapping them.

:func:`scan_model` lists the ``nnx.Linear`` and ``nnx.Conv`` layers outside the spiking
neurons, in definition order. :func:`tap_layer` swaps a layer's class for a subclass that
applies :func:`~._jax_tap.tap` (or :func:`~._jax_tap.conv_tap`) to its output while
``grad_fn`` traces, reading the layer's ``u`` from a :class:`Slot`; parameter paths do not
change, and :func:`untap_layer` gives the layer its own class back (DESIGN.md 8.10).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from sadp_core.errors import SADPError

from ._jax_tap import conv_tap, tap

__all__ = [
    "Layer",
    "Slot",
    "nnx_module",
    "scan_model",
    "spyx_neurons",
    "strengthen_weak_types",
    "tap_layer",
    "untap_layer",
]


@dataclass
class Slot:
    """What a tapped layer reads: its ``u`` while ``grad_fn`` traces, else None."""

    bias: bool
    kernel_size: tuple[int, ...] | None = None  # a convolution's; None for a Linear layer
    u: jax.Array | None = None


@dataclass(frozen=True)
class Layer:
    """A Linear or Conv layer of an NNX model that can be tapped.

    Attributes:
        name: its dotted path in the model (``"layers.2"``).
        module: the ``nnx.Linear`` or ``nnx.Conv``.
        kind: ``"Linear"`` or ``"Conv"``.
    """

    name: str
    module: Any
    kind: str


def nnx_module() -> Any:
    """``flax.nnx`` if flax is imported, else None (never imports it)."""
    if "flax" not in sys.modules:
        return None
    from flax import nnx

    return nnx


def spyx_neurons() -> tuple[type, ...]:
    nn = sys.modules.get("spyx.nn")
    if nn is None:
        return ()
    names = ("LIF", "ALIF", "CuBaLIF", "IF", "RIF", "RLIF", "RCuBaLIF", "PSU_LIF")
    return tuple(getattr(nn, name) for name in names if isinstance(getattr(nn, name, None), type))


def _is_neuron(node: Any, neurons: tuple[type, ...]) -> bool:
    """A spyx neuron, a class listed in ``neurons=``, or a spyx-style one (initial_state + spike)."""
    if neurons and isinstance(node, neurons):
        return True
    return callable(getattr(node, "initial_state", None)) and callable(getattr(node, "spike", None))


def _children(node: Any, nnx: Any) -> list[Any]:
    if isinstance(node, nnx.Pytree):
        return [value for key, value in vars(node).items() if not str(key).startswith("_")]
    if isinstance(node, (list, tuple)):
        return list(node)
    if isinstance(node, dict):
        return list(node.values())
    return []


def _kind(node: Any, nnx: Any) -> str | None:
    if isinstance(node, nnx.Linear):
        return "Linear"
    if isinstance(node, nnx.Conv):
        return "Conv"
    return None


def scan_model(model: Any, nnx: Any, neurons: tuple[type, ...]) -> tuple[list[Layer], bool]:
    """Linear and Conv layers outside neurons, in definition order, and whether any neuron exists."""
    names = {id(node): ".".join(str(p) for p in path) for path, node in nnx.iter_graph(model)}
    found: list[Layer] = []
    seen: set[int] = set()
    any_neuron = False

    def walk(node: Any, inside_neuron: bool) -> None:
        nonlocal any_neuron
        if id(node) in seen:
            return
        seen.add(id(node))
        kind = _kind(node, nnx)
        if kind is not None and not inside_neuron and id(node) in names:
            found.append(Layer(names[id(node)], node, kind))
        neuron = isinstance(node, nnx.Module) and _is_neuron(node, neurons)
        any_neuron = any_neuron or neuron
        for child in _children(node, nnx):
            walk(child, inside_neuron or neuron)

    walk(model, False)
    return found, any_neuron


def _tapping_class(original: type, slot: Slot) -> type:
    call = original.__call__

    def __call__(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        output = call(self, inputs, *args, **kwargs)
        if slot.u is None:
            return output
        if slot.kernel_size is not None:
            return conv_tap(output, inputs, slot.u, kernel_size=slot.kernel_size, bias=slot.bias)
        return tap(output, inputs, slot.u, bias=slot.bias)

    namespace = {"__call__": __call__, "__module__": original.__module__, "_sadp_original": original}
    return type(f"SADPTapped{original.__name__}", (original,), namespace)


def tap_layer(layer: Layer) -> Slot:
    """Swap ``layer``'s class for a tapping subclass; the :class:`Slot` it reads ``u`` from.

    Raises:
        SADPError: if another handle already taps the layer.
    """
    module = layer.module
    if hasattr(type(module), "_sadp_original"):
        raise SADPError(
            f"the layer {layer.name!r} is already tapped by another handle; detach that handle first"
        )
    kernel = tuple(int(k) for k in module.kernel_size) if layer.kind == "Conv" else None
    slot = Slot(bias=getattr(module, "bias", None) is not None, kernel_size=kernel)
    module.__class__ = _tapping_class(type(module), slot)
    return slot


def untap_layer(module: Any) -> None:
    """Give a layer tapped by :func:`tap_layer` its own class back (no-op otherwise)."""
    if hasattr(type(module), "_sadp_original"):
        module.__class__ = type(module)._sadp_original


def strengthen_weak_types(model: Any, nnx: Any) -> None:
    """Give weakly typed float parameters (spyx's ``LI.beta``, ...) a strong type, same values.

    A weakly typed parameter becomes strongly typed after the first optimizer update, which
    makes a jitted step compile a second time (and a third, through the optimizer's state).
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            value = node.get_value()
            if isinstance(value, jax.Array) and value.weak_type and jnp.issubdtype(value.dtype, jnp.floating):
                node.set_value(jnp.asarray(value, dtype=value.dtype))

"""The JAX spiking networks and helpers that several JAX test modules share.

Importing this module is the gate of a JAX test module: in a session that lists jax in
``SADP_FRAMEWORKS`` the JAX packages must import (an error otherwise, never a silent skip);
elsewhere a missing package skips the module that imports this one.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest


def framework(name: str) -> ModuleType:
    """A session that lists jax in SADP_FRAMEWORKS needs ``name`` installed; elsewhere, skip."""
    if "jax" in os.environ.get("SADP_FRAMEWORKS", "").split(","):
        return importlib.import_module(name)
    return pytest.importorskip(name)


jax = framework("jax")
nnx = framework("flax.nnx")
spyx = framework("spyx")
optax = framework("optax")
eqx = framework("equinox")

import jax.numpy as jnp  # noqa: E402


@jax.custom_jvp
def heaviside(v: jax.Array) -> jax.Array:
    """Spike where the membrane potential crosses the threshold (0 after the shift)."""
    return (v > 0).astype(v.dtype)


@heaviside.defjvp
def _heaviside_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (v,), (dv,) = primals, tangents
    return heaviside(v), dv / (1.0 + 10.0 * jnp.abs(v)) ** 2  # fast-sigmoid surrogate


def spyx_model(sizes: tuple[int, int, int], neuron: str = "LIF", seed: int = 0, dtype: Any = None) -> Any:
    """Linear -> spiking layer (spyx ``neuron``) -> readout Linear -> leaky integrator."""
    inputs, hidden, classes = sizes
    rngs = nnx.Rngs(seed)
    kind = {} if dtype is None else {"param_dtype": dtype}
    return spyx.nn.Sequential(
        nnx.Linear(inputs, hidden, rngs=rngs, **kind), getattr(spyx.nn, neuron)((hidden,), rngs=rngs),
        nnx.Linear(hidden, classes, rngs=rngs, **kind), spyx.nn.LI((classes,), rngs=rngs),
    )  # fmt: skip


def spyx_loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy of the time-averaged readout of a time-major input ([B])."""
    out, _ = spyx.nn.run(model, x)  # [T, B, C]
    return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)

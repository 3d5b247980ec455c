"""The JAX networks of the benchmark, in spyx (flax NNX): the MLP and the overhead network.

The MLP (:class:`SpyxMLP`) is the snnTorch MLP of :mod:`sadp_bench.models.torch` in spyx:
``nnx.Linear(side^2, 256)`` on the static image (direct current, computed once), then
``spyx.nn.run`` of a ``spyx.nn.Sequential(LIF, nnx.Linear(256, 10))`` over T = 4 steps,
which returns the readout's per-step outputs ``[T, B, C]``. The neuron (:class:`LeakyLIF`)
is spyx's ``LIF`` with snnTorch ``Leaky(beta=0.9)`` dynamics: fixed beta = 0.9 (not
trained), reset by subtraction from the previous membrane (no gradient through the reset),
spike on the new membrane, arctan surrogate ``1 / (1 + (pi v)^2)`` (snnTorch's ``ATan``
with alpha = 2). :func:`build_model` gives it the initial weights of the snnTorch MLP built
with the same seed (torch is imported there only), so both frameworks start from the same
network.

The overhead network (:func:`overhead_model`, :mod:`sadp_bench.speed.jax`) is spyx's own
784-256-10 LIF network: Linear, LIF, Linear, LI.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import spyx
from flax import nnx

from . import CLASSES, JAX_MODELS

BETA = 0.9


def _atan_surrogate(v: jax.Array) -> jax.Array:
    return 1.0 / (1.0 + (jnp.pi * v) ** 2)


class LeakyLIF(spyx.nn.LIF):
    """spyx ``LIF`` with snnTorch ``Leaky(beta=0.9)`` dynamics (see the module docstring)."""

    def __init__(self, hidden_shape: tuple[int, ...], *, rngs: nnx.Rngs) -> None:
        activation = spyx.axn.custom(_atan_surrogate, spyx.axn.heaviside)
        super().__init__(hidden_shape, beta=BETA, activation=activation, rngs=rngs)
        self.beta = nnx.Variable(jnp.asarray(BETA, jnp.float32))  # a constant, as in snnTorch

    def __call__(self, x: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        reset = jax.lax.stop_gradient(spyx.axn.heaviside(v - self.threshold))
        v = self.beta[...] * v + x - reset * self.threshold
        return self.spike(v - self.threshold), v


class SpyxMLP(nnx.Module):
    """``fc1`` on the static image, then T steps of LIF and the ``nnx.Linear`` readout."""

    def __init__(self, side: int, hidden: int, steps: int, rngs: nnx.Rngs) -> None:
        self.steps = steps
        self.fc1 = nnx.Linear(side * side, hidden, rngs=rngs)
        self.core = spyx.nn.Sequential(LeakyLIF((hidden,), rngs=rngs), nnx.Linear(hidden, CLASSES, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        current = self.fc1(x)
        outputs, _ = spyx.nn.run(self.core, jnp.broadcast_to(current, (self.steps, *current.shape)))
        return outputs  # [T, B, C]


def build_model(model: str, side: int, *, hidden: int, steps: int, seed: int) -> SpyxMLP:
    """The spyx MLP with the initial weights of the snnTorch MLP of the same seed."""
    if model not in JAX_MODELS:
        raise ValueError(f"no {model!r} model for framework 'jax' (only {', '.join(JAX_MODELS)})")
    import torch

    from .torch import SnnTorchMLP

    torch.manual_seed(seed)
    reference = SnnTorchMLP(side, hidden, steps)
    network = SpyxMLP(side, hidden, steps, nnx.Rngs(seed))
    for mine, theirs in ((network.fc1, reference.fc1), (network.core.layers[1], reference.fc2)):
        mine.kernel[...] = jnp.asarray(theirs.weight.detach().numpy().T)
        mine.bias[...] = jnp.asarray(theirs.bias.detach().numpy())
    return network


def per_example_loss(outputs: jax.Array, labels: jax.Array, kind: str = "rate") -> jax.Array:
    """``[B]`` losses from ``[T, B, C]`` outputs, as :func:`sadp_bench.models.torch.per_example_loss`."""
    if kind == "mean":
        return optax.softmax_cross_entropy_with_integer_labels(outputs.mean(0), labels)
    steps = outputs.shape[0]
    labels = jnp.broadcast_to(labels, (steps, *labels.shape))
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean(0)


def overhead_model(seed: int) -> Any:
    """The overhead measurement's spyx network: Linear(784, 256), LIF, Linear(256, 10), LI."""
    rngs = nnx.Rngs(seed)
    return spyx.nn.Sequential(
        nnx.Linear(784, 256, rngs=rngs), spyx.nn.LIF((256,), rngs=rngs), nnx.Linear(256, 10, rngs=rngs),
        spyx.nn.LI((10,), rngs=rngs),
    )  # fmt: skip

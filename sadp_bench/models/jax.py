"""The JAX networks of the benchmark, in spyx (flax NNX): the MLP, the conv net and the overhead network.

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

The conv net (:class:`SpyxConv`) is the snnTorch conv net of :mod:`sadp_bench.models.torch`
in spyx, NHWC: ``nnx.Conv(1, 8, 3x3, padding 1)`` and a 2x2 max-pool on the static image
(computed once), then ``spyx.nn.run`` of ``spyx.nn.Sequential(LIF, nnx.Conv(8, 16, 3x3,
stride 2, padding 1), LIF, Flatten, nnx.Linear(16 (side/4)^2, 10))`` over T steps, the same
:class:`LeakyLIF` neuron as the MLP; no BatchNorm (the torch net has none), so there is no
train/eval mode. Padding is explicit ``(1, 1)`` on each side, as in torch (flax's ``"SAME"``
pads a stride-2 convolution of an even side by ``(0, 1)``). The flatten order differs (HWC
here, CHW in torch): :func:`copy_torch_weights` permutes the readout's rows to match, so the
two networks compute the same function on the same weights.

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


class SpyxConv(nnx.Module):
    """``conv1`` and max-pool on the static image, then T steps of LIF, strided ``conv2``, LIF
    and the ``nnx.Linear`` readout (the snnTorch conv net, NHWC; see the module docstring)."""

    def __init__(self, side: int, steps: int, rngs: nnx.Rngs) -> None:
        self.side, self.steps = side, steps
        pad = ((1, 1), (1, 1))
        self.conv1 = nnx.Conv(1, 8, (3, 3), padding=pad, rngs=rngs)
        pooled, out = side // 2, side // 4
        self.core = spyx.nn.Sequential(
            LeakyLIF((pooled, pooled, 8), rngs=rngs),
            nnx.Conv(8, 16, (3, 3), strides=(2, 2), padding=pad, rngs=rngs),
            LeakyLIF((out, out, 16), rngs=rngs),
            spyx.nn.Flatten(),
            nnx.Linear(16 * out * out, CLASSES, rngs=rngs),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        image = x.reshape(-1, self.side, self.side, 1)
        current = nnx.max_pool(self.conv1(image), (2, 2), strides=(2, 2))
        outputs, _ = spyx.nn.run(self.core, jnp.broadcast_to(current, (self.steps, *current.shape)))
        return outputs  # [T, B, C]


JaxModel = SpyxMLP | SpyxConv
"""A JAX benchmark model: a network whose call returns the readout's outputs ``[T, B, C]``."""


def _set(layer: Any, kernel: Any, bias: Any) -> None:
    layer.kernel[...] = jnp.asarray(kernel, jnp.float32)
    layer.bias[...] = jnp.asarray(bias, jnp.float32)


def copy_torch_weights(network: JaxModel, reference: Any) -> None:
    """Give ``network`` the weights of the torch model ``reference`` (in place).

    ``SpyxMLP`` takes those of a ``SnnTorchMLP`` (``nn.Linear`` ``[out, in]`` -> kernel
    ``[in, out]``), ``SpyxConv`` those of a ``SnnTorchConv`` (``nn.Conv2d`` ``[O, I, kh, kw]``
    -> kernel ``[kh, kw, I, O]``; the readout's input index is CHW in torch and HWC here, so
    its rows are permuted). The two then compute the same outputs on the same input.
    """

    def numpy(tensor: Any) -> Any:
        return tensor.detach().cpu().numpy()

    if isinstance(network, SpyxMLP):
        for mine, theirs in ((network.fc1, reference.fc1), (network.core.layers[1], reference.fc2)):
            _set(mine, numpy(theirs.weight).T, numpy(theirs.bias))
        return
    for mine, theirs in ((network.conv1, reference.conv1), (network.core.layers[1], reference.conv2)):
        _set(mine, numpy(theirs.weight).transpose(2, 3, 1, 0), numpy(theirs.bias))
    readout = network.core.layers[4]
    channels, side = reference.conv2.out_channels, network.side // 4
    weight = numpy(reference.fc.weight).reshape(CLASSES, channels, side, side)  # [o, c, h, w]
    _set(readout, weight.transpose(2, 3, 1, 0).reshape(-1, CLASSES), numpy(reference.fc.bias))


def build_model(model: str, side: int, *, hidden: int, steps: int, seed: int) -> JaxModel:
    """The spyx ``mlp`` or ``conv`` with the initial weights of the snnTorch model of the same seed."""
    if model not in JAX_MODELS:
        raise ValueError(f"no {model!r} model for framework 'jax' (only {', '.join(JAX_MODELS)})")
    import torch

    from .torch import build_model as build_torch_model

    torch.manual_seed(seed)
    reference = build_torch_model("snntorch", model, side, hidden=hidden, steps=steps)
    network: JaxModel
    if model == "mlp":
        network = SpyxMLP(side, hidden, steps, nnx.Rngs(seed))
    else:
        network = SpyxConv(side, steps, nnx.Rngs(seed))
    copy_torch_weights(network, reference)
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

"""The benchmark's JAX networks are the snnTorch ones: same outputs and gradients on the same weights.

:func:`sadp_bench.models.jax.copy_torch_weights` gives the spyx MLP and conv net the weights of
the snnTorch MLP and conv net; both then compute the same readout outputs ``[T, B, C]`` and the
same loss gradients (float32 tolerance), and the conv net trains through the JAX adapter with
SADP (:class:`sadp_bench.train.jax.JaxRun`). Collected where snnTorch and JAX are both under
test (``nox -s bench_cli``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from sadp_bench.data import Data
from sadp_bench.models import torch as torch_models
from sadp_bench.models.jax import SpyxConv, SpyxMLP, build_model, copy_torch_weights, per_example_loss
from sadp_bench.train.common import RunSpec, Settings
from sadp_bench.train.jax import JaxRun

STEPS = 4


def pair(model: str, side: int, seed: int = 0) -> tuple[torch.nn.Module, SpyxMLP | SpyxConv]:
    """A snnTorch model and its JAX twin with the torch weights copied over."""
    torch.manual_seed(seed)
    reference = torch_models.build_model("snntorch", model, side, hidden=32, steps=STEPS)
    network = SpyxMLP(side, 32, STEPS, nnx.Rngs(1)) if model == "mlp" else SpyxConv(side, STEPS, nnx.Rngs(1))
    copy_torch_weights(network, reference)
    return reference, network


def inputs(side: int, batch: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Images strong enough that the neurons spike (and some stay silent)."""
    rng = np.random.default_rng(0)
    x = (rng.random((batch, side * side), dtype=np.float32) * 4).astype(np.float32)
    return x, (np.arange(batch) % 10).astype(np.int64)


@pytest.mark.parametrize(("model", "side"), [("mlp", 8), ("conv", 8), ("conv", 28)])
def test_jax_model_outputs_equal_the_snntorch_model_on_the_same_weights(model: str, side: int) -> None:
    reference, network = pair(model, side)
    x, _ = inputs(side)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(network(jnp.asarray(x)))
    assert got.shape == expected.shape == (STEPS, len(x), 10)
    # neurons spike, so the readout sees more than its bias, and differently at different steps
    assert np.ptp(expected, axis=0).max() > 1e-2 and np.ptp(expected, axis=1).max() > 1e-2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_jax_model_gradients_equal_the_snntorch_model(model: str) -> None:
    """The surrogate gradient, the detached reset and the layer layouts match: the loss
    gradient of every layer is the torch one in the JAX layout."""
    side = 8
    reference, network = pair(model, side)
    x, y = inputs(side)
    torch_loss = torch_models.per_example_loss(reference(torch.from_numpy(x)), torch.from_numpy(y)).mean()
    torch_loss.backward()

    def loss(net: SpyxMLP | SpyxConv) -> jax.Array:
        return per_example_loss(net(jnp.asarray(x)), jnp.asarray(y, jnp.int32)).mean()

    value, grads = nnx.value_and_grad(loss)(network)
    np.testing.assert_allclose(float(value), torch_loss.item(), rtol=1e-5)
    gradients = {name: p.grad.detach() for name, p in reference.named_parameters()}
    as_model = type(reference)(side, 32, STEPS)
    with torch.no_grad():
        for name, p in as_model.named_parameters():
            p.copy_(gradients[name])
    copied = SpyxMLP(side, 32, STEPS, nnx.Rngs(2)) if model == "mlp" else SpyxConv(side, STEPS, nnx.Rngs(2))
    copy_torch_weights(copied, as_model)  # torch gradients, in the JAX layout
    expected = jax.tree.leaves(nnx.state(copied, nnx.Param))
    got = jax.tree.leaves(grads)
    assert len(got) == len(expected) == len(gradients)
    assert all(float(jnp.abs(e).max()) > 0 for e in expected)  # every layer gets an error
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-6)


def test_build_model_starts_the_jax_conv_from_the_snntorch_conv_of_the_same_seed() -> None:
    torch.manual_seed(3)
    reference = torch_models.build_model("snntorch", "conv", 8)
    network = build_model("conv", 8, hidden=256, steps=STEPS, seed=3)
    x, _ = inputs(8)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(network(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(build_model("conv", 8, hidden=256, steps=STEPS, seed=4)(x)), expected)


def test_the_jax_conv_trains_with_sadp_through_the_adapter() -> None:
    """A warm-up epoch on all 40 examples, then a pruned epoch on 20 (r = 0.5), in batches of 20."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((40, 64), dtype=np.float32) * 4)
    labels = torch.from_numpy((np.arange(40) % 10).astype(np.int64))
    data = Data("random 8x8", 8, images, labels, images[:20], labels[:20])
    run = JaxRun(RunSpec("jax", "conv", "sadp", 0.5, 0), data, Settings(epochs=2, batch_size=20))
    assert run.handle.readout_name == "core.layers.4"  # the nnx.Linear after the last LIF
    before = [np.asarray(p) for p in jax.tree.leaves(nnx.state(run.model, nnx.Param))]
    run.train_epoch()
    scores = np.asarray(run.handle.scores)
    assert scores.shape == (40,) and np.isfinite(scores).all() and (scores > 0).all()
    assert run.handle.stats.unscored_examples == 0
    run.train_epoch()
    assert run.examples == 40 + 20 and run.done
    after = [np.asarray(p) for p in jax.tree.leaves(nnx.state(run.model, nnx.Param))]
    changed = [float(np.abs(b - a).max()) for b, a in zip(before, after, strict=True)]
    assert min(changed) > 1e-4, changed  # every layer trained
    assert run.parts.traces == 1  # one batch size, one compilation

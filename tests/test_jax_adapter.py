"""The JAX adapter on real spyx (flax NNX), flax NNX and equinox models (no mocks).

Ground truth for the scores is ``jax.vmap(jax.grad(...))`` over single examples: the
norm of each example's gradient on the readout's weights and bias.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# isort: split
import jax_snn  # first, the gate: it skips this module where JAX is not installed
from jax_snn import eqx, heaviside, jax, nnx, optax, spyx, spyx_loss

# isort: split
import jax.numpy as jnp
from sadp_core.adapters import jax as sadp_jax

import sadp_core
from sadp_core import SADPError

snn = spyx.nn
T, B, F, H, C = 6, 16, 12, 20, 4


# -- models -----------------------------------------------------------------------------------


def spyx_model(neuron: str = "LIF", seed: int = 0, sizes: tuple[int, int, int] = (F, H, C)) -> Any:
    """Linear -> spiking layer -> readout Linear -> leaky integrator (spyx)."""
    return jax_snn.spyx_model(sizes, neuron=neuron, seed=seed)


class EqxLIF(eqx.Module):
    """A hand-written equinox LIF network whose readout is tapped inside its own scan."""

    hidden: eqx.nn.Linear
    readout: eqx.nn.Linear
    beta: float = 0.8

    def __init__(self, key: jax.Array, sizes: tuple[int, int, int] = (F, H, C)) -> None:
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(sizes[0], sizes[1], key=k1)
        self.readout = eqx.nn.Linear(sizes[1], sizes[2], key=k2)

    def __call__(self, x: jax.Array, u: jax.Array | None = None) -> jax.Array:
        batch = x.shape[1]

        def step(carry: tuple[jax.Array, jax.Array], x_t: jax.Array) -> tuple[Any, jax.Array]:
            v, o = carry
            current = jax.vmap(self.hidden)(x_t)
            spikes = heaviside(v - 1.0)
            v = self.beta * v + current - spikes
            out = jax.vmap(self.readout)(spikes)  # [B, C]
            if u is not None:
                out = sadp_jax.tap(out, spikes, u)  # the functional tap, inside the scan
            o = 0.9 * o + out
            return (v, o), o

        init = (jnp.zeros((batch, self.hidden.out_features)), jnp.zeros((batch, self.readout.out_features)))
        _, outputs = jax.lax.scan(step, init, x)
        return outputs  # [T, B, C]


def eqx_loss(model: EqxLIF, x: jax.Array, y: jax.Array, u: jax.Array | None = None) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x, u).mean(0), y)


class NnxNeuron(nnx.Module):
    """A user's own NNX spiking layer (not spyx-style: no initial_state), with an internal Linear."""

    def __init__(self, size: int, rngs: nnx.Rngs) -> None:
        self.recurrent = nnx.Linear(size, size, rngs=rngs)  # inside a neuron: never the readout

    def __call__(self, current: jax.Array, v: jax.Array, spikes: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = 0.8 * v + current + 0.1 * self.recurrent(spikes) - spikes
        return heaviside(v - 1.0), v


class NnxNet(nnx.Module):
    """A hand-written flax NNX SNN running its own lax.scan; attribute names not in definition order."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.z_input = nnx.Linear(F, H, rngs=rngs)
        self.neuron = NnxNeuron(H, rngs)
        self.a_out = nnx.Linear(H, C, rngs=rngs)  # defined last: the readout

    def __call__(self, x: jax.Array) -> jax.Array:
        def step(carry: tuple[jax.Array, jax.Array], x_t: jax.Array) -> tuple[Any, jax.Array]:
            v, spikes = carry
            spikes, v = self.neuron(self.z_input(x_t), v, spikes)
            return (v, spikes), self.a_out(spikes)

        zeros = jnp.zeros((x.shape[1], H))
        _, outputs = jax.lax.scan(step, (zeros, zeros), x)
        return outputs


def nnx_loss(model: NnxNet, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x).sum(0), y)


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.random((T, B, F)) * 3).astype(np.float32)
    y = rng.integers(0, C, B)
    w = rng.uniform(0.5, 2.0, B).astype(np.float32)  # plan-like weights: the scores must undo them
    return x, y, w


def readout_norms(per_example_grads: Any) -> np.ndarray:
    """``[B]`` Frobenius norms of per-example gradients (a pytree of ``[B, ...]`` arrays)."""
    leaves = jax.tree.leaves(per_example_grads)
    squares = [np.square(np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)).sum(1) for leaf in leaves]
    return np.sqrt(np.sum(squares, axis=0))


def nnx_truth(model: Any, loss_fn: Callable[..., Any], path: tuple[Any, ...], x: Any, y: Any) -> np.ndarray:
    """True per-example readout gradient norms by ``vmap(grad)`` over single examples."""
    graphdef, state = nnx.split(model)

    def single(state: Any, x_i: jax.Array, y_i: jax.Array) -> jax.Array:
        return loss_fn(nnx.merge(graphdef, state), x_i[:, None], y_i[None])[0]

    grads = jax.jit(jax.vmap(jax.grad(single), in_axes=(None, 1, 0)))(state, jnp.asarray(x), jnp.asarray(y))
    for key in path:
        grads = grads[key]
    return readout_norms(grads)


def check_scores(scores: Any, truth: np.ndarray, kind: str) -> None:
    scores = np.asarray(scores, dtype=np.float64)
    assert scores.shape == truth.shape
    assert truth.min() > 0, "the test needs a non-zero readout gradient for every example"
    if kind == "bound":
        assert np.all(scores >= truth * (1 - 1e-5)), (scores / truth).min()
        assert np.all(scores <= truth * 10)  # a bound, but not a vacuous one
    else:
        np.testing.assert_allclose(scores, truth, rtol=1e-4)


def spike_count(model: Any, x: Any) -> float:
    hidden = snn.Sequential(model.layers[0], model.layers[1])
    spikes, _ = snn.run(hidden, jnp.asarray(x))
    return float(spikes.sum())


# -- scores against ground truth --------------------------------------------------------------


@pytest.mark.parametrize("neuron", ["LIF", "ALIF", "CuBaLIF"])
def test_spyx_scores_against_vmap_grad(neuron: str, batch: Any) -> None:
    x, y, w = batch
    model = spyx_model(neuron)
    assert spike_count(model, x) > 0  # the readout sees spikes: a real test of the spike factor
    truth = nnx_truth(model, spyx_loss, ("layers", 2), x, y)
    plain_loss, plain_grads = nnx.jit(nnx.value_and_grad(lambda m: jnp.mean(w * spyx_loss(m, x, y))))(model)
    for score in ("bound", "exact"):
        h = sadp_core.attach(model, num_examples=100, epochs=3, score=score)
        assert isinstance(h, sadp_jax.JaxHandle) and h.readout_name == "layers.2"
        (loss, scores), grads = h.value_and_grad(spyx_loss)(model, x, y, w)
        h.detach()
        check_scores(scores, truth, score)
        # the same loss and gradients as plain nnx.value_and_grad
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
        for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_equinox_functional_tap_against_vmap_grad(batch: Any) -> None:
    x, y, w = batch
    model = EqxLIF(jax.random.key(1))

    def single(m: EqxLIF, x_i: jax.Array, y_i: jax.Array) -> jax.Array:
        return eqx_loss(m, x_i[:, None], y_i[None])[0]

    @eqx.filter_jit
    def per_example_grads(m: EqxLIF, x: jax.Array, y: jax.Array) -> EqxLIF:
        return jax.vmap(eqx.filter_grad(single), in_axes=(None, 1, 0))(m, x, y)

    per_example = per_example_grads(model, jnp.asarray(x), jnp.asarray(y))
    truth = readout_norms((per_example.readout.weight, per_example.readout.bias))
    plain_loss, plain = eqx.filter_jit(eqx.filter_value_and_grad(lambda m: jnp.mean(w * eqx_loss(m, x, y))))(
        model
    )
    for score in ("bound", "exact"):
        h = sadp_core.attach(model, num_examples=100, epochs=3, score=score, readout_shape=(C, H))
        assert h.framework == "equinox" and h.functional
        (loss, scores), grads = h.value_and_grad(eqx_loss)(model, x, y, w)
        check_scores(scores, truth, score)
        np.testing.assert_allclose(grads.readout.weight, plain.readout.weight, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grads.hidden.weight, plain.hidden.weight, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)


def test_pytree_model_with_functional_tap(batch: Any) -> None:
    """A model that is just a dict of arrays and a function with its own scan."""
    x, y, w = batch
    keys = jax.random.split(jax.random.key(2), 2)
    params = {
        "hidden": jax.random.normal(keys[0], (F, H)) * 0.5,
        "readout": jax.random.normal(keys[1], (H, C)) * 0.3,
        "bias": jnp.zeros(C),
    }

    def loss_fn(p: dict[str, jax.Array], x: jax.Array, y: jax.Array, u: jax.Array | None) -> jax.Array:
        def step(v: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            spikes = heaviside(v - 1.0)
            v = 0.8 * v + x_t @ p["hidden"] - spikes
            out = spikes @ p["readout"] + p["bias"]
            return v, out if u is None else sadp_jax.tap(out, spikes, u)

        _, outs = jax.lax.scan(step, jnp.zeros((x.shape[1], H)), x)
        return optax.softmax_cross_entropy_with_integer_labels(outs.mean(0), y)

    h = sadp_core.attach(params, num_examples=50, epochs=2)
    assert h.framework == "pytree"
    (_, scores), grads = h.value_and_grad(loss_fn)(params, x, y, w)
    assert set(grads) == {"hidden", "readout", "bias"}

    def single(p: Any, x_i: jax.Array, y_i: jax.Array) -> jax.Array:
        return loss_fn(p, x_i[:, None], y_i[None], None)[0]

    per_example = jax.jit(jax.vmap(jax.grad(single), in_axes=(None, 1, 0)))(
        params, jnp.asarray(x), jnp.asarray(y)
    )
    check_scores(scores, readout_norms((per_example["readout"], per_example["bias"])), "bound")


def test_handwritten_nnx_model(batch: Any) -> None:
    """Readout found in definition order (not alphabetical), skipping a Linear inside the neuron."""
    x, y, w = batch
    model = NnxNet(nnx.Rngs(3))
    with pytest.raises(SADPError, match="neurons="):
        sadp_core.attach(model, num_examples=100, epochs=3)  # its neuron is not spyx-style
    h = sadp_core.attach(model, num_examples=100, epochs=3, neurons=NnxNeuron, score="exact")
    assert h.readout_name == "a_out"
    (_, scores), _ = h.value_and_grad(nnx_loss, jit=False)(model, x, y, w)
    h.detach()
    check_scores(scores, nnx_truth(model, nnx_loss, ("a_out",), x, y), "exact")


def test_nnx_functional_mode(batch: Any) -> None:
    """An NNX model may apply the tap itself (functional=True): nothing is swapped."""
    x, y, w = batch
    model = spyx_model("LIF", seed=4)
    readout = model.layers[2]

    def loss_fn(m: Any, x: jax.Array, y: jax.Array, u: jax.Array) -> jax.Array:
        hidden = snn.Sequential(m.layers[0], m.layers[1])
        spikes, _ = snn.run(hidden, x)  # [T, B, H]
        out = sadp_jax.tap(m.layers[2](spikes), spikes, u)  # the readout applied to all steps at once
        return optax.softmax_cross_entropy_with_integer_labels(out.sum(0), y)

    h = sadp_core.attach(model, num_examples=100, epochs=3, functional=True)
    assert type(readout) is nnx.Linear and h.readout_name is None
    (_, scores), _ = h.value_and_grad(loss_fn)(model, x, y, w)
    truth = nnx_truth(model, lambda m, x, y: loss_fn(m, x, y, jnp.zeros(x.shape[1])), ("layers", 2), x, y)
    check_scores(scores, truth, "bound")


# -- handle behaviour -------------------------------------------------------------------------


def test_attach_keeps_parameter_paths_and_detach_restores_class(batch: Any) -> None:
    x, y, w = batch
    model = spyx_model()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)  # made before attach
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(model))]
    with sadp_core.attach(model, num_examples=100, epochs=3) as h:
        assert type(model.layers[2]).__name__ == "SADPTappedLinear"
        assert isinstance(model.layers[2], nnx.Linear)
        assert [path for path, _ in nnx.to_flat_state(nnx.state(model))] == paths
        grad_fn = h.value_and_grad(spyx_loss)
        before = np.asarray(model.layers[2].kernel[...])
        _, grads = grad_fn(model, x, y, w)
        optimizer.update(model, grads)
        assert not np.allclose(before, model.layers[2].kernel[...])
        with pytest.raises(SADPError, match="already tapped"):
            sadp_core.attach(model, num_examples=100, epochs=3)
    assert type(model.layers[2]) is nnx.Linear
    with pytest.raises(SADPError, match="detached"):
        grad_fn(model, x, y, w[:8])  # a new shape retraces: the handle refuses


def test_batches_weights_and_deferred_updates(batch: Any) -> None:
    x, y, _ = batch
    model = spyx_model()
    n = 40
    X = np.concatenate([x] * 3, axis=1)[:, :n]
    Y = np.concatenate([y] * 3)[:n]
    h = sadp_core.attach(model, num_examples=n, prune_ratio=0.5, epochs=4, seed=3)
    grad_fn = h.value_and_grad(spyx_loss)
    epoch = h.batches(batch_size=16)
    assert (epoch.epoch, len(epoch), h.next_epoch) == (0, 3, 1)
    seen = []
    for idx, w in epoch:
        assert idx.dtype == np.int64 and w.dtype == np.float32
        (_, scores), _ = grad_fn(model, X[:, idx], Y[idx], w)
        assert isinstance(scores, jax.Array)
        h.update(idx, scores)
        seen.append(idx)
    assert [len(i) for i in seen] == [16, 16, 8]  # the last batch is short, nothing padded
    assert len(h._pending) == 3  # scores wait on the device until the table is read
    assert np.isfinite(h.scores).all() and not h._pending
    pruned = h.batches(batch_size=16)
    assert pruned.plan.phase == "prune" and len(pruned.plan.indices) == 20
    weights = np.concatenate([w for _, w in pruned])
    np.testing.assert_allclose(weights, pruned.plan.weights.astype(np.float32))
    with pytest.raises(SADPError, match="one score per index"):
        h.update(np.arange(3), jnp.ones(4))
    with pytest.raises(SADPError, match="batch_size"):
        h.batches(batch_size=0)


def test_zero_weight_gives_nan_score_and_is_ignored(batch: Any) -> None:
    x, y, w = batch
    model = spyx_model()
    h = sadp_core.attach(model, num_examples=B, epochs=2)
    w = w.copy()
    w[3] = 0.0
    (_, scores), _ = h.value_and_grad(spyx_loss)(model, x, y, w)
    assert np.isnan(scores[3]) and np.isfinite(np.delete(np.asarray(scores), 3)).all()
    h.update(np.arange(B), scores)
    with pytest.warns(sadp_core.SADPWarning, match="non-finite"):
        table = h.scores
    assert np.isnan(table[3]) and h.stats.nonfinite_scores == 1


def test_loss_based_method_scores_are_losses(batch: Any) -> None:
    x, y, w = batch
    model = spyx_model()
    h = sadp_core.attach(model, num_examples=B, epochs=2, method="infobatch")
    assert h.expects == "loss"
    (_, scores), _ = h.value_and_grad(spyx_loss)(model, x, y, w)
    np.testing.assert_allclose(scores, spyx_loss(model, x, y), rtol=1e-6)


def test_readout_choice_and_errors() -> None:
    rngs = nnx.Rngs(0)
    no_neuron = nnx.Sequential(nnx.Linear(F, H, rngs=rngs), nnx.Linear(H, C, rngs=rngs))
    with pytest.raises(SADPError, match="no spiking layer"):
        sadp_core.attach(no_neuron, num_examples=10, epochs=2)
    no_linear = snn.Sequential(snn.LIF((F,), rngs=rngs), snn.LI((F,), rngs=rngs))
    with pytest.raises(SADPError, match=r"no nnx\.Linear"):
        sadp_core.attach(no_linear, num_examples=10, epochs=2)
    model = spyx_model()
    with pytest.raises(SADPError, match=r"readout='layers.9'.*choose one of \['layers.0', 'layers.2'\]"):
        sadp_core.attach(model, num_examples=10, epochs=2, readout="layers.9")
    with pytest.raises(SADPError, match=r"not an nnx\.Linear"):
        sadp_core.attach(model, num_examples=10, epochs=2, readout=model.layers[1])
    with pytest.raises(SADPError, match="score must be"):
        sadp_core.attach(model, num_examples=10, epochs=2, score="fast")
    h = sadp_core.attach(model, num_examples=10, epochs=2, readout=model.layers[0])
    assert h.readout_name == "layers.0"  # by module; a hidden layer's bound, if you want it
    h.detach()
    with pytest.raises(SADPError, match=r"readout= selects a layer of a flax NNX model"):
        sadp_core.attach(EqxLIF(jax.random.key(0)), num_examples=10, epochs=2, readout="readout")
    with pytest.raises(SADPError, match="readout_shape"):
        sadp_core.attach(EqxLIF(jax.random.key(0)), num_examples=10, epochs=2, score="exact")
    with pytest.raises(SADPError, match="found no adapter"):
        sadp_core.attach("not a model", num_examples=10, epochs=2)


def test_errors_at_trace_time(batch: Any) -> None:
    x, y, w = batch
    model = EqxLIF(jax.random.key(0))
    h = sadp_core.attach(model, num_examples=B, epochs=2)
    with pytest.raises(SADPError, match="never applied"):
        h.value_and_grad(lambda m, x, y, u: eqx_loss(m, x, y))(model, x, y, w)
    with pytest.raises(SADPError, match="reduce the other axes"):
        h.value_and_grad(lambda m, x, y, u: jnp.stack([eqx_loss(m, x, y, u)] * 2, 1))(model, x, y, w)
    with pytest.raises(SADPError, match="one weight per example"):
        h.value_and_grad(eqx_loss)(model, x, y, w[:8])
    with pytest.raises(SADPError, match=r"outside any per-example jax\.vmap"):
        sadp_jax.tap(jnp.ones(3), jnp.ones(5), jnp.zeros(1))
    unused = snn.Sequential(*spyx_model().layers, nnx.Linear(C, C, rngs=nnx.Rngs(0)))  # never runs
    h2 = sadp_core.attach(unused, num_examples=B, epochs=2)
    assert h2.readout_name == "layers.4"

    def loss_fn(m: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        out, _ = snn.run(snn.Sequential(*list(m.layers)[:4]), x)
        return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)

    with pytest.raises(SADPError, match="never ran in loss_fn"):
        h2.value_and_grad(loss_fn)(unused, x, y, w)


# -- training on real data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return x[:1500], y[:1500], x[1500:], y[1500:]


STEPS_T = 4


def digits_model(seed: int = 0) -> Any:
    rngs = nnx.Rngs(seed)
    return snn.Sequential(
        nnx.Linear(64, 128, rngs=rngs), snn.LIF((128,), rngs=rngs), nnx.Linear(128, 10, rngs=rngs),
        snn.LI((10,), rngs=rngs),
    )  # fmt: skip


def digits_loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    current = jnp.broadcast_to(2.0 * x, (STEPS_T, *x.shape))  # direct-current encoding, time-major
    out, _ = snn.run(model, current)
    return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    current = jnp.broadcast_to(2.0 * jnp.asarray(x), (STEPS_T, *x.shape))
    out, _ = snn.run(model, current)
    return float((np.asarray(out.mean(0)).argmax(1) == y).mean())


class Trainer:
    """A spyx model, its optimizer and handle, and a jitted step that counts its traces."""

    def __init__(self, model: Any, **options: Any) -> None:
        self.model = model
        self.h = sadp_core.attach(model, **options)  # before the optimizer: see below
        self.optimizer = nnx.Optimizer(model, optax.adam(5e-3), wrt=nnx.Param)
        self.traces = 0
        grad_fn = self.h.value_and_grad(self.counting_loss, jit=False)  # compiled by train_step

        @nnx.jit
        def train_step(model: Any, optimizer: Any, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
            (loss, scores), grads = grad_fn(model, x, y, w)
            optimizer.update(model, grads)
            return loss, scores

        self.step = train_step

    def counting_loss(self, model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        self.traces += 1  # Python runs only while jax traces: one trace per compilation
        return digits_loss(model, x, y)

    def epoch(self, x: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, int]]:
        """Train one epoch; yields (batch size, traces so far) after each step."""
        for idx, w in self.h.batches(batch_size=128):
            _, scores = self.step(self.model, self.optimizer, x[idx], y[idx], w)
            self.h.update(idx, scores)
            yield len(idx), self.traces


def snapshot(node: Any) -> Any:
    return jax.tree.map(jnp.array, nnx.state(node))


def test_digits_training_schedule_compiles_and_resume(digits: Any) -> None:
    x, y, x_test, y_test = digits
    n, epochs = len(y), 6
    options = dict(num_examples=n, prune_ratio=0.5, epochs=epochs, seed=0, anneal_fraction=0.25)
    run = Trainer(digits_model(), **options)
    start_accuracy = accuracy(run.model, x_test, y_test)
    plans, saved = [], None
    for epoch in range(epochs):
        if epoch == 3:  # a checkpoint at an epoch boundary: model, optimizer, handle
            saved = (snapshot(run.model), snapshot(run.optimizer), run.h.state_dict())
        steps = list(run.epoch(x, y))
        plans.append(run.h.plan(epoch))
        if epoch >= 1:  # no compilation inside an epoch; at most one for its short last batch
            traces = [count for _, count in steps]
            assert traces[-2] == traces[0], f"epoch {epoch} retraced mid-epoch: {traces}"
            assert traces[-1] - traces[0] <= 1
    # one compilation per batch size: 128, then the short last batches of full (92) and pruned
    # (110) epochs. attach() gave spyx's weakly typed LI.beta a strong type, which spares two
    # more compilations after the first updates (DESIGN 8.11)
    assert run.traces == 3
    # the schedule: warm-up with all data, pruned epochs of K examples, anneal with all data
    budget = round(0.5 * n)
    assert [p.phase for p in plans] == ["warmup", "prune", "prune", "prune", "prune", "anneal"]
    assert [len(p.indices) for p in plans] == [n, budget, budget, budget, budget, n]
    for plan in plans:
        assert len(np.unique(plan.indices)) == len(plan.indices)
    # the annealed correction: weights 1 in the first pruned epoch (exponent 0), spread later
    assert np.all(plans[1].weights == 1) and not np.all(plans[2].weights == 1)
    assert np.all(plans[-1].weights == 1)
    assert run.h.stats.unscored_examples == 0 and run.h.stats.nonfinite_scores == 0
    end_accuracy = accuracy(run.model, x_test, y_test)
    assert end_accuracy > max(start_accuracy + 0.3, 0.75), (start_accuracy, end_accuracy)
    run.h.detach()

    # resume from the checkpoint: the identical plans follow
    assert saved is not None
    model_state, optimizer_state, handle_state = saved
    resumed = Trainer(digits_model(seed=9), **options)
    nnx.update(resumed.model, model_state)
    nnx.update(resumed.optimizer, optimizer_state)
    resumed.h.load_state_dict(handle_state)
    assert resumed.h.next_epoch == 3
    for epoch in range(3, epochs):
        for _ in resumed.epoch(x, y):
            pass
        plan = resumed.h.plan(epoch)
        np.testing.assert_array_equal(plan.indices, plans[epoch].indices)
        np.testing.assert_allclose(plan.weights, plans[epoch].weights)
    np.testing.assert_allclose(resumed.h.scores, run.h.scores, rtol=1e-5)
    resumed.h.detach()


# -- GPU --------------------------------------------------------------------------------------


def _jax_gpu() -> Any:
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.gpu
def test_bound_on_gpu(batch: Any) -> None:
    device = _jax_gpu()
    if device is None:  # this test runs only where torch sees CUDA (nox -s gpu installs jax[cuda12])
        pytest.fail("CUDA is present but jax sees no GPU: install jax[cuda12] (nox -s gpu does)")
    x, y, w = (jax.device_put(a, device) for a in batch)
    with jax.default_device(device), warnings.catch_warnings():
        model = spyx_model("ALIF")
        h = sadp_core.attach(model, num_examples=B, epochs=2)
        (_, scores), _ = h.value_and_grad(spyx_loss)(model, x, y, w)
        assert next(iter(scores.devices())).platform == "gpu"
        h.update(np.arange(B), scores)
        h.detach()
        truth = nnx_truth(model, spyx_loss, ("layers", 2), x, y)
    check_scores(h.scores, truth, "bound")


# -- the documentation's examples -------------------------------------------------------------


def test_docs_page_examples_run() -> None:
    """The Python blocks of docs/jax.md run as they are (the docs session has no JAX)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "jax.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(block, "docs/jax.md", "exec"), namespace)
        h = namespace["h"]
        assert h.stats.unscored_examples == 0 and h.next_epoch == h.epochs

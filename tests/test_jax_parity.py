"""The JAX handle offers what the torch handle offers (issue 15, point 4; issue 14, point 6).

- ``scope="all"`` on flax NNX models (spyx and hand-written, Linear and Conv layers): the
  score bounds the norm of each example's gradient on every tapped layer together (ground
  truth: ``jax.vmap(jax.grad(...))`` over single examples), is exactly
  ``sqrt(B_readout^2 + B_hidden^2)`` of the per-layer bounds, and with ``score="exact"``
  equals the true norm.
- ``synchronize`` and ``stats.unscored_batches``.
- The same mistakes give the same ``SADPError`` messages on an snnTorch handle and a JAX
  handle (a parametrized test that runs both); it needs torch and snnTorch besides JAX.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

# isort: split
import jax_snn  # first, the gate: it skips this module where JAX is not installed
from jax_snn import eqx, heaviside, jax, nnx, optax, spyx, spyx_loss

# isort: split
import jax.numpy as jnp

import sadp_core
from sadp_core import SADPError, SADPWarning

snn = spyx.nn
T, B, F, H, C = 5, 48, 10, 24, 4


class Neuron(nnx.Module):
    """A user's own spiking layer (named with ``neurons=``)."""

    def __call__(self, current: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = 0.8 * v + current
        spikes = heaviside(v - 1.0)
        return spikes, v - spikes


class ConvNet(nnx.Module):
    """Conv (no bias) -> neuron -> Conv (strided, bias) -> neuron -> flatten -> Linear, own scan."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(2, 4, kernel_size=(3, 3), use_bias=False, rngs=rngs)
        self.lif1 = Neuron()
        self.conv2 = nnx.Conv(4, 6, kernel_size=(3, 3), strides=(2, 2), rngs=rngs)
        self.lif2 = Neuron()
        self.fc = nnx.Linear(6 * 4 * 4, C, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # x: [T, B, 8, 8, 2]
        def step(carry: tuple[jax.Array, jax.Array], x_t: jax.Array) -> tuple[Any, jax.Array]:
            v1, v2 = carry
            s1, v1 = self.lif1(3.0 * self.conv1(x_t), v1)
            s2, v2 = self.lif2(3.0 * self.conv2(s1), v2)
            return (v1, v2), self.fc(s2.reshape(s2.shape[0], -1))

        batch = x.shape[1]
        init = (jnp.zeros((batch, 8, 8, 4)), jnp.zeros((batch, 4, 4, 6)))
        _, outputs = jax.lax.scan(step, init, x)
        return outputs


def conv_loss(model: ConvNet, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x).mean(0), y)


def data(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, *shape)) * 3).astype(np.float32)
    y = rng.integers(0, C, B)
    w = rng.uniform(0.5, 2.0, B).astype(np.float32)
    return x, y, w


def true_norms(model: Any, loss_fn: Callable[..., Any], layers: list[str], x: Any, y: Any) -> np.ndarray:
    """Per-example norm of the gradient on ``layers``' kernels and biases, by vmap(grad)."""
    graphdef, state = nnx.split(model, nnx.Param)

    def single(state: Any, x_i: jax.Array, y_i: jax.Array) -> jax.Array:
        return loss_fn(nnx.merge(graphdef, state), x_i[:, None], y_i[None])[0]

    grads = jax.jit(jax.vmap(jax.grad(single), in_axes=(None, 1, 0)))(state, jnp.asarray(x), jnp.asarray(y))
    squares = np.zeros(x.shape[1])
    for path, value in nnx.to_flat_state(grads):
        name = ".".join(str(p) for p in path[:-1])
        if name in layers:
            leaf = np.asarray(value.get_value() if hasattr(value, "get_value") else value, np.float64)
            squares += np.square(leaf.reshape(leaf.shape[0], -1)).sum(1)
    return np.sqrt(squares)


def scores_of(model: Any, loss_fn: Callable[..., Any], x: Any, y: Any, w: Any, **options: Any) -> np.ndarray:
    h = sadp_core.attach(model, num_examples=B, epochs=2, **options)
    (_, scores), _ = h.value_and_grad(loss_fn)(model, x, y, w)
    h.detach()
    return np.asarray(scores, dtype=np.float64)


# -- scope="all" ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_scope_all_bounds_every_layer_of_a_spyx_mlp(seed: int) -> None:
    """48 examples per seed: bound >= the true norm over both Linear layers for every one,
    the exact per-layer combination of the single-layer bounds, and score="exact" = truth."""
    x, y, w = data(seed, (F,))
    model = jax_snn.spyx_model((F, H, C), seed=seed)
    truth = true_norms(model, spyx_loss, ["layers.0", "layers.2"], x, y)
    readout_truth = true_norms(model, spyx_loss, ["layers.2"], x, y)
    hidden_truth = true_norms(model, spyx_loss, ["layers.0"], x, y)
    assert hidden_truth.min() > 1e-3 * truth.max()  # the hidden layer's gradient is really there
    h = sadp_core.attach(model, num_examples=B, epochs=2, scope="all")
    assert h.layer_names == ["layers.0", "layers.2"] and h.readout_name == "layers.2"
    (loss, bound), grads = h.value_and_grad(spyx_loss)(model, x, y, w)
    h.detach()
    assert type(model.layers[0]) is nnx.Linear and type(model.layers[2]) is nnx.Linear
    bound = np.asarray(bound, np.float64)
    assert np.all(bound >= truth * (1 - 1e-5)), (bound / truth).min()
    assert np.all(bound <= truth * 20)  # a bound, not a vacuous one
    # sqrt(B_hidden^2 + B_readout^2), each B_l from a handle that taps that layer alone
    readout = scores_of(model, spyx_loss, x, y, w)
    hidden = scores_of(model, spyx_loss, x, y, w, readout="layers.0")
    np.testing.assert_allclose(bound, np.sqrt(readout**2 + hidden**2), rtol=1e-5)
    # scope="readout" is what it was: the readout's bound alone, >= the readout's true norm
    assert np.all(readout >= readout_truth * (1 - 1e-5)) and np.all(readout < bound)
    exact = scores_of(model, spyx_loss, x, y, w, scope="all", score="exact")
    np.testing.assert_allclose(exact, truth, rtol=1e-4)
    # the gradients are those of the plain weighted loss
    plain_loss, plain = nnx.value_and_grad(lambda m: jnp.mean(w * spyx_loss(m, x, y)))(model)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_scope_all_bounds_a_conv_net() -> None:
    """Conv layers with and without bias, a strided one, and the Linear readout."""
    x, y, w = data(2, (8, 8, 2))
    model = ConvNet(nnx.Rngs(2))
    layers = ["conv1", "conv2", "fc"]
    truth = true_norms(model, conv_loss, layers, x, y)
    assert truth.min() > 0 and true_norms(model, conv_loss, ["conv1"], x, y).min() > 0
    h = sadp_core.attach(model, num_examples=B, epochs=2, scope="all", neurons=Neuron)
    assert h.layer_names == layers
    (_, bound), _ = h.value_and_grad(conv_loss)(model, x, y, w)
    h.detach()
    bound = np.asarray(bound, np.float64)
    assert np.all(bound >= truth * (1 - 1e-5)), (bound / truth).min()
    assert np.all(bound <= truth * 50)
    # a Conv alone (readout= may name one): its bound holds for its own gradient
    conv_only = scores_of(model, conv_loss, x, y, w, readout="conv2", neurons=Neuron)
    assert np.all(conv_only >= true_norms(model, conv_loss, ["conv2"], x, y) * (1 - 1e-5))
    with pytest.raises(SADPError, match="score='exact' supports Linear layers only; 'conv1' is Conv"):
        sadp_core.attach(model, num_examples=B, epochs=2, scope="all", score="exact", neurons=Neuron)
    assert type(model.conv1) is nnx.Conv  # nothing left tapped by the refused attach


def test_scope_all_errors() -> None:
    model = jax_snn.spyx_model((F, H, C), seed=0)
    with pytest.raises(SADPError, match=r"scope must be 'readout' or 'all', got 'everything'"):
        sadp_core.attach(model, num_examples=B, epochs=2, scope="everything")
    with pytest.raises(SADPError, match=r"scope='all' taps the nnx\.Linear and nnx\.Conv layers"):
        sadp_core.attach(model, num_examples=B, epochs=2, scope="all", functional=True)
    with pytest.raises(SADPError, match=r"a equinox model|an? equinox model"):
        key = jax.random.key(0)
        sadp_core.attach(eqx.nn.Linear(3, 2, key=key), num_examples=B, epochs=2, scope="all")
    h = sadp_core.attach(model, num_examples=B, epochs=2, scope="all")
    with pytest.raises(SADPError, match="already tapped"):
        sadp_core.attach(model, num_examples=B, epochs=2)
    x, y, w = data(0, (F,))

    def hidden_only(m: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.zeros(x.shape[1]) + 0.0 * jnp.sum(x)  # runs no layer

    with pytest.raises(SADPError, match=r"none of the tapped layers \['layers.0', 'layers.2'\] ran"):
        h.value_and_grad(hidden_only)(model, x, y, w)
    state = h.state_dict()
    h.detach()
    other = sadp_core.attach(model, num_examples=B, epochs=2)
    with pytest.raises(SADPError, match=r"saved with scope='all', readout='layers.2'; this handle has scope"):
        other.load_state_dict(state)
    other.detach()


# -- synchronize and unscored batches -----------------------------------------------------------


def test_synchronize_writes_waiting_scores() -> None:
    x, y, w = data(3, (F,))
    model = jax_snn.spyx_model((F, H, C), seed=3)
    h = sadp_core.attach(model, num_examples=B, epochs=2)
    (_, scores), _ = h.value_and_grad(spyx_loss)(model, x, y, w)
    h.update(np.arange(B), scores)
    assert len(h._pending) == 1  # waiting on the device
    h.synchronize()
    assert not h._pending
    np.testing.assert_allclose(h._table.latest, np.asarray(scores), rtol=1e-6)
    h.synchronize()  # nothing waiting: nothing happens
    h.detach()


def _train(h: Any, model: Any, x: np.ndarray, y: np.ndarray, skip: set[int], defer: bool = False) -> None:
    grad_fn = h.value_and_grad(spyx_loss)
    later = []
    for number, (idx, w) in enumerate(h.batches(batch_size=16)):
        (_, scores), _ = grad_fn(model, x[:, idx], y[idx], w)
        if number in skip:
            continue
        if defer:
            later.append((idx, scores))
        else:
            h.update(idx, scores)
    for idx, scores in later:  # updates deferred to the end of the epoch: fine
        h.update(idx, scores)


def test_batches_left_without_update_are_counted_and_reported_once() -> None:
    x, y, _ = data(4, (F,))
    model = jax_snn.spyx_model((F, H, C), seed=4)
    h = sadp_core.attach(model, num_examples=B, epochs=4, prune_ratio=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # deferred updates raise no warning
        _train(h, model, x, y, skip=set(), defer=True)
        assert h.stats.unscored_batches == 0
    _train(h, model, x, y, skip={0})  # epoch 1: its first batch's scores never reach update
    with pytest.warns(SADPWarning, match=r"1 batch\(es\) handed out by h\.batches\(\) got no scores"):
        stats = h.stats
    assert stats.unscored_batches == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once; later ones are counted
        _train(h, model, x, y, skip={0, 1})
        h.synchronize()
    assert h.stats.unscored_batches == 3
    assert h.state_dict()["jax"]["unscored_batches"] == 3
    h.detach()


# -- the same mistakes, the same messages (torch and JAX) ---------------------------------------


def _torch_framework(name: str) -> ModuleType:
    """The torch side of the parity test: required where SADP_FRAMEWORKS lists snntorch."""
    if "snntorch" in os.environ.get("SADP_FRAMEWORKS", "").split(","):
        return importlib.import_module(name)
    return pytest.importorskip(name)


def _torch_handle(num_examples: int = B, **options: Any) -> Any:
    torch_module, snntorch = _torch_framework("torch"), _torch_framework("snntorch")
    net = torch_module.nn.Sequential(
        torch_module.nn.Linear(F, H), snntorch.Leaky(beta=0.9, init_hidden=True), torch_module.nn.Linear(H, C)
    )
    return net, sadp_core.attach(net, num_examples=num_examples, epochs=3, prune_ratio=0.5, **options)


def _jax_handle(num_examples: int = B, **options: Any) -> Any:
    model = jax_snn.spyx_model((F, H, C), seed=0)
    return model, sadp_core.attach(model, num_examples=num_examples, epochs=3, prune_ratio=0.5, **options)


def _handle(framework: str, **options: Any) -> Any:
    return (_torch_handle if framework == "torch" else _jax_handle)(**options)


def test_both_handles_name_the_layers_they_tap() -> None:
    for framework, expected in (("torch", ["0", "2"]), ("jax", ["layers.0", "layers.2"])):
        _, h = _handle(framework, scope="all")
        assert h.layer_names == expected and h.readout_name == expected[-1]
        h.detach()
        _, h = _handle(framework)
        assert h.layer_names == expected[-1:]
        h.detach()


def _mistake_attach(options: dict[str, Any]) -> Callable[[str], None]:
    def run(framework: str) -> None:
        _handle(framework, **options)

    return run


def _mistake_not_spiking(framework: str) -> None:
    if framework == "torch":
        # sadp_core.attach finds no adapter for a torch model without an snnTorch neuron; the
        # adapter itself (what attach calls for a model it accepts) says what is missing
        _torch_framework("snntorch")
        torch_module = _torch_framework("torch")
        adapter = importlib.import_module("sadp_core.adapters.snntorch")
        adapter.attach(torch_module.nn.Sequential(torch_module.nn.Linear(F, C)), num_examples=B, epochs=3)
    else:
        rngs = nnx.Rngs(0)
        sadp_core.attach(nnx.Sequential(nnx.Linear(F, C, rngs=rngs)), num_examples=B, epochs=3)


def _pruned_handle(framework: str) -> Any:
    """A handle in its first pruned epoch (epoch 1), every example scored in the warm-up."""
    _, h = _handle(framework)
    if framework == "torch":
        h.plan(0)
        h.update(np.arange(B), np.linspace(1.0, 2.0, B))
        h.plan(1)
    else:
        for idx, _ in h.batches(batch_size=B):
            h.update(idx, np.linspace(1.0, 2.0, B))
        h.batches(batch_size=B)
    return h


def _mistake_outside_plan(framework: str) -> None:
    h = _pruned_handle(framework)
    outside = np.setdiff1d(np.arange(B), h.plan(1).indices)[:3]
    if framework == "torch":
        torch_module = _torch_framework("torch")
        h.weighted_loss(torch_module.ones(3), torch_module.tensor(outside))
    else:
        h.update(outside, jnp.ones(3))


def _mistake_update(indices: list[int], scores: list[float]) -> Callable[[str], None]:
    """``update`` with the examples at ``indices`` of the plan (or beyond N), and ``scores``."""

    def run(framework: str) -> None:
        h = _pruned_handle(framework)
        plan = h.plan(1).indices
        h.update(np.array([plan[i] if i < len(plan) else i for i in indices]), np.array(scores))

    return run


def _mistake_batch_size(framework: str) -> None:
    _, h = _handle(framework)
    if framework == "torch":
        h.batch_sampler(batch_size=0)
    else:
        h.batches(batch_size=0)


def _mistake_losses_not_per_example(framework: str) -> None:
    if framework == "torch":
        torch_module = _torch_framework("torch")
        _, h = _torch_handle()
        h.plan(0)
        h.weighted_loss(torch_module.ones(4, 2), torch_module.arange(4))
    else:
        model, h = _jax_handle()
        x, y, w = data(0, (F,))
        h.value_and_grad(lambda m, x, y: jnp.stack([spyx_loss(m, x, y)] * 2, 1))(model, x, y, w)


def _mistake_state_of_other_scope(framework: str) -> None:
    _, saved = _handle(framework, scope="all")
    state = saved.state_dict()
    saved.detach()
    _, h = _handle(framework)
    h.load_state_dict(state)


def _mistake_state_of_other_size(framework: str) -> None:
    _, saved = _handle(framework)
    state = saved.state_dict()
    saved.detach()
    _handle(framework, num_examples=B + 1)[1].load_state_dict(state)


MISTAKES: dict[str, tuple[Callable[[str], None], str]] = {
    "unknown scope": (
        _mistake_attach({"scope": "layers"}),
        r"scope must be 'readout' or 'all', got 'layers'",
    ),
    "unknown score": (_mistake_attach({"score": "fast"}), r"score must be 'bound' or 'exact', got 'fast'"),
    "unknown readout": (
        _mistake_attach({"readout": "nowhere"}),
        r"readout='nowhere' is not an? (nnx\.)?Linear or (nnx\.)?Conv layer of the model.*choose one of",
    ),
    "not a spiking network": (
        _mistake_not_spiking,
        r"no .*spiking layer found in .*sadp_core\.Pruner directly",
    ),
    "batch size 0": (_mistake_batch_size, r"batch_size must be a positive integer, got 0"),
    "index out of range": (_mistake_update([B + 3], [1.0]), rf"indices must lie in \[0, {B}\)"),
    "scores do not match indices": (_mistake_update([0, 1], [1.0]), r"scores must be one score per index"),
    "negative score": (_mistake_update([0], [-1.0]), r"scores must be >= 0"),
    "index outside the plan": (
        _mistake_outside_plan,
        r"examples \[.*\] are not in the plan of epoch 1; use its",
    ),
    "losses not per example": (_mistake_losses_not_per_example, r"reduce the other axes per example first"),
    "state of another scope": (
        _mistake_state_of_other_scope,
        r"this state was saved with scope='all', readout='[^']+'; this handle has scope='readout'",
    ),
    "state of another N": (_mistake_state_of_other_size, r"num_examples"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_same_mistake_gives_the_same_message(mistake: str) -> None:
    make, pattern = MISTAKES[mistake]
    messages = {}
    for framework in ("torch", "jax"):
        with pytest.raises(SADPError, match=pattern) as raised:
            make(framework)
        messages[framework] = str(raised.value)
    # word for word where nothing is framework-specific (the readout's name is)
    same = {name: message.replace("'layers.2'", "'2'") for name, message in messages.items()}
    if mistake not in (
        "unknown readout",
        "not a spiking network",
        "losses not per example",
        "index outside the plan",
    ):
        assert same["torch"] == same["jax"]

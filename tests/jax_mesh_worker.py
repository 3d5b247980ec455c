"""Worker of tests/test_jax_mesh.py: data-parallel JAX training with the SADP handle.

Run as a script, in a fresh process whose environment forces two CPU devices (XLA reads
``XLA_FLAGS`` when jax is imported, so the test sets it before starting this process)::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \
        python tests/jax_mesh_worker.py OUT_DIR --dtype float64 spyx-auto nnx-explicit

Each case trains the same model from the same initial parameters on scikit-learn's digits
twice: once on one device (no mesh), once with x, y and w sharded along the ``"data"`` axis
of a two-device mesh and the model and optimizer state replicated. It writes
``OUT_DIR/<case>.npz``: per step the indices, scores, loss and the trace count of the
jitted step for both runs, each epoch's plan, the final score tables, and what the mesh
run saw of the shardings. The test compares them.

Cases: ``spyx-auto`` (a spyx LIF network, mesh axes of type ``Auto``, batches of 128 with
``drop_last=True``) and ``nnx-explicit`` (a hand-written flax NNX LIF network that builds
its scan state from its input, mesh axes of type ``Explicit`` as ``jax.make_mesh`` makes
them by default, ``score="exact"``, batches of 150, which divide the 1500-example warm-up
and the 750-example pruned plans, so every example of every plan is trained).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import spyx
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax_snn import heaviside, spyx_model  # tests/jax_snn.py, beside this script
from sklearn import datasets

import sadp_core

STEPS_T = 4  # time steps of the direct-current encoding
EPOCHS = 3  # warm-up with all data, then two pruned epochs
CASES = {  # batch size, drop_last, mesh axis type, score
    "spyx-auto": (128, True, AxisType.Auto, "bound"),
    "nnx-explicit": (150, False, AxisType.Explicit, "exact"),
}


class Neuron(nnx.Module):
    """A LIF layer in the spyx style (``initial_state`` and ``spike``: the adapter knows it)."""

    def __init__(self, beta: float = 0.8) -> None:
        self.beta = beta

    def initial_state(self, like: jax.Array) -> jax.Array:
        # from the input, not jnp.zeros((B, H)): under explicit mesh axes the state then has
        # the batch's sharding, as the scan carry must
        return jnp.zeros_like(like)

    def spike(self, v: jax.Array) -> jax.Array:
        return heaviside(v - 1.0)


class NnxNet(nnx.Module):
    """64 -> 128 LIF -> 10 readout, its own ``lax.scan`` over time (time-major input)."""

    def __init__(self, dtype: Any, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(64, 128, param_dtype=dtype, rngs=rngs)
        self.neuron = Neuron()
        self.readout = nnx.Linear(128, 10, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        def step(v: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            v = self.neuron.beta * v + self.hidden(x_t)
            spikes = self.neuron.spike(v)
            return v - spikes, self.readout(spikes)

        _, outputs = jax.lax.scan(step, self.neuron.initial_state(self.hidden(x[0])), x)
        return outputs  # [T, B, 10]


def make_model(case: str, dtype: Any) -> nnx.Module:
    """The case's model, always from the same initial parameters."""
    if case.startswith("spyx"):
        return spyx_model((64, 128, 10), seed=0, dtype=dtype)
    return NnxNet(dtype, nnx.Rngs(0))


def loss_fn(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy of the time-averaged readout ([B])."""
    current = jnp.broadcast_to(2.0 * x, (STEPS_T, *x.shape))  # direct-current encoding
    out = spyx.nn.run(model, current)[0] if isinstance(model, spyx.nn.Sequential) else model(current)
    return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)


def digits(dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """1500 shuffled scikit-learn digits, pixels scaled to [0, 1]."""
    data = datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))[:1500]
    return (data.data[order] / 16.0).astype(dtype), data.target[order].astype(np.int32)


def train(case: str, dtype: Any, mesh: Mesh | None) -> dict[str, Any]:
    """Train ``EPOCHS`` epochs; on ``mesh`` (data parallel) or on the default device."""
    batch_size, drop_last, _, score = CASES[case]
    x, y = digits(dtype)
    model: Any = make_model(case, dtype)
    h = sadp_core.attach(model, num_examples=len(y), prune_ratio=0.5, epochs=EPOCHS, seed=0, score=score)
    optimizer = nnx.Optimizer(model, optax.adam(5e-3), wrt=nnx.Param)
    traces = [0]

    def counting_loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
        traces[0] += 1  # Python runs only while jax traces: one trace per compilation
        return loss_fn(model, x, y)

    grad_fn = h.value_and_grad(counting_loss, jit=False)  # compiled by train_step

    @nnx.jit
    def train_step(model: nnx.Module, optimizer: nnx.Optimizer[Any], x: Any, y: Any, w: Any) -> Any:
        (loss, scores), grads = grad_fn(model, x, y, w)
        optimizer.update(model, grads)
        return loss, scores

    seen: dict[str, Any] = {}
    if mesh is not None:  # the model and optimizer state replicated on every device
        state = nnx.state((model, optimizer))
        nnx.update((model, optimizer), jax.device_put(state, NamedSharding(mesh, P())))
        batch_sharding = NamedSharding(mesh, P("data"))
    steps: dict[str, list[Any]] = {"indices": [], "scores": [], "loss": [], "traces": [], "epoch": []}
    plans = []
    for epoch in range(EPOCHS):
        batches = h.batches(batch_size, drop_last=drop_last)
        for idx, w in batches:
            xb, yb, wb = x[idx], y[idx], w
            if mesh is not None:
                xb, yb, wb = jax.device_put((xb, yb, wb), batch_sharding)
            loss, scores = train_step(model, optimizer, xb, yb, wb)
            if mesh is not None and not seen:
                seen = {
                    "x_devices": len(xb.sharding.device_set),
                    "x_shard_rows": [shard.data.shape[0] for shard in xb.addressable_shards],
                    "scores_spec": str(scores.sharding.spec),
                    "scores_devices": len(scores.sharding.device_set),
                    "kernel_replicated": bool(model.layers[0].kernel[...].sharding.is_fully_replicated)
                    if isinstance(model, spyx.nn.Sequential)
                    else bool(model.hidden.kernel[...].sharding.is_fully_replicated),
                }
            h.update(idx, scores)  # one [B] array per step, as it is: no host copy here
            steps["indices"].append(idx)
            steps["scores"].append(np.asarray(scores))
            steps["loss"].append(float(loss))
            steps["traces"].append(traces[0])
            steps["epoch"].append(epoch)
        plans.append(batches.plan)
    stats = h.stats
    h.detach()
    return {
        "indices": np.concatenate(steps["indices"]),
        "step_sizes": np.array([len(i) for i in steps["indices"]]),
        "scores": np.concatenate(steps["scores"]).astype(np.float64),
        "loss": np.array(steps["loss"]),
        "traces": np.array(steps["traces"]),
        "epoch": np.array(steps["epoch"]),
        "plan_indices": np.concatenate([p.indices for p in plans]),
        "plan_weights": np.concatenate([p.weights for p in plans]),
        "plan_sizes": np.array([len(p.indices) for p in plans]),
        "table": h.scores,
        "unscored": np.array(stats.unscored_examples),
        "nonfinite": np.array(stats.nonfinite_scores),
        **{f"seen_{key}": np.array(value) for key, value in seen.items()},
    }


def main() -> None:
    """Run the cases named on the command line, one npz per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    devices = jax.devices()
    if len(devices) != 2:
        raise SystemExit(
            f"expected 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2), got {devices}"
        )
    dtype = np.dtype(args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        mesh = jax.make_mesh((2,), ("data",), axis_types=(CASES[case][2],))
        one = train(case, dtype, None)
        sharded = train(case, dtype, mesh)
        arrays = {f"one_{k}": v for k, v in one.items()} | {f"mesh_{k}": v for k, v in sharded.items()}
        np.savez(args.out / f"{case}.npz", mesh_size=np.array(mesh.size), **arrays)


if __name__ == "__main__":
    main()

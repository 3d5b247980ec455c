"""Cost of the JAX adapter: a jitted training step with ``grad_fn`` over the same step without.

    sadp-bench overhead jax                   # 300 steps, bound and exact scores
    sadp-bench overhead jax --steps 100 --score bound
    sadp-bench overhead jax --scope all          # every Linear layer tapped (scope="all")

(``python benchmarks/jax_overhead.py`` from a clone is the same.)

A spyx LIF network (784-256-10: Linear, LIF, Linear, LI), T=4, batch 128, Adam, trains in
two copies with the same initial weights on the same batches. The plain step is
``nnx.value_and_grad`` of ``mean(w * losses)`` and an optimizer update, under ``nnx.jit``;
the attached step is the same with ``grad_fn = h.value_and_grad(loss_fn)``, which also
returns the per-example scores, followed by ``h.update(idx, scores)``. Steps alternate
between the two (which one goes first alternates too), each timed to completion
(``block_until_ready``), so that machine noise hits both alike. The printed ratio is the
median over steps of the attached step's time over the plain step's time (target: at most
1.05 on CPU). The network runs on JAX's default device (a GPU where JAX has one);
``--json PATH`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import spyx
from flax import nnx

import sadp_core

from ..models.jax import overhead_model

TARGET = 1.05


def loss_fn(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    out, _ = spyx.nn.run(model, x)  # [T, B, 10]
    return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)


def measure(
    score: str, steps: int, batch_size: int, time_steps: int, warmup: int, scope: str = "readout"
) -> tuple[float, float, float]:
    """Median plain and attached step times (seconds) and the median per-step ratio."""
    rng = np.random.default_rng(0)
    n = batch_size * 8
    spikes = (rng.random((time_steps, n, 784)) < 0.2).astype(np.float32)  # rate-coded input
    labels = rng.integers(0, 10, n).astype(np.int32)

    plain_model, attached_model = overhead_model(0), overhead_model(0)
    handle = sadp_core.attach(
        attached_model, num_examples=n, prune_ratio=0.5, epochs=10_000, score=score, scope=scope
    )
    plain_opt = nnx.Optimizer(plain_model, optax.adam(1e-3), wrt=nnx.Param)
    attached_opt = nnx.Optimizer(attached_model, optax.adam(1e-3), wrt=nnx.Param)
    # the same strong types on both sides (attach() strengthens spyx's weakly typed LI.beta)
    nnx.update(plain_model, nnx.state(attached_model))
    grad_fn = handle.value_and_grad(loss_fn, jit=False)  # compiled as part of the step below

    @nnx.jit
    def plain_step(model: Any, opt: Any, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(w * loss_fn(m, x, y)))(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def attached_step(model: Any, opt: Any, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
        (loss, scores), grads = grad_fn(model, x, y, w)
        opt.update(model, grads)
        return loss, scores

    def batches() -> Any:
        while True:
            for idx, w in handle.batches(batch_size=batch_size, drop_last=True):
                yield idx, jnp.asarray(spikes[:, idx]), jnp.asarray(labels[idx]), jnp.asarray(w)

    def run_plain(x: jax.Array, y: jax.Array, w: jax.Array) -> float:
        start = time.perf_counter()
        plain_step(plain_model, plain_opt, x, y, w).block_until_ready()
        return time.perf_counter() - start

    def run_attached(idx: np.ndarray, x: jax.Array, y: jax.Array, w: jax.Array) -> float:
        start = time.perf_counter()
        _, scores = attached_step(attached_model, attached_opt, x, y, w)
        handle.update(idx, scores)
        scores.block_until_ready()
        return time.perf_counter() - start

    stream = batches()
    plain_times, attached_times, ratios = [], [], []
    for step in range(warmup + steps):
        idx, x, y, w = next(stream)
        if step % 2:
            plain, attached = run_plain(x, y, w), run_attached(idx, x, y, w)
        else:
            attached = run_attached(idx, x, y, w)
            plain = run_plain(x, y, w)
        if step >= warmup:
            plain_times.append(plain)
            attached_times.append(attached)
            ratios.append(attached / plain)
    handle.detach()
    return statistics.median(plain_times), statistics.median(attached_times), statistics.median(ratios)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line), measure, print; 0 when done."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--score", choices=["bound", "exact", "both"], default="both")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--scope", choices=["readout", "all"], default="readout")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    scores = ["bound", "exact"] if args.score == "both" else [args.score]
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__} on {device.platform} ({device.device_kind}), {os.cpu_count()} CPUs; "
        f"784-256-10 LIF (spyx), T={args.time_steps}, batch {args.batch_size}, {args.steps} steps, "
        f"scope={args.scope!r}"
    )
    print(f"{'score':<8}{'plain ms':>10}{'attached ms':>13}{'ratio':>8}  target <= {TARGET}")
    rows = []
    for score in scores:
        plain, attached, ratio = measure(
            score, args.steps, args.batch_size, args.time_steps, args.warmup, args.scope
        )
        verdict = "ok" if ratio <= TARGET else "over target"
        print(f"{score:<8}{1e3 * plain:>10.2f}{1e3 * attached:>13.2f}{ratio:>8.3f}  {verdict}")
        rows.append({"score": score, "plain_ms": 1e3 * plain, "attached_ms": 1e3 * attached, "ratio": ratio})
    if args.json is not None:
        where = {"platform": device.platform, "device_kind": device.device_kind}
        settings = {
            "steps": args.steps, "batch_size": args.batch_size, "time_steps": args.time_steps,
            "scope": args.scope,
        }  # fmt: skip
        args.json.write_text(json.dumps({**where, **settings, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

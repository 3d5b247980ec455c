"""A training run of a spyx network through ``sadp_core``'s JAX adapter (framework ``jax``).

Imported only when ``--frameworks`` lists ``jax`` (:func:`sadp_bench.train.compare.make_run`),
so the torch runs never import JAX. The network is :class:`sadp_bench.models.jax.SpyxMLP`
or :class:`~sadp_bench.models.jax.SpyxConv` with the initial weights of the snnTorch model of
the same seed (neither has BatchNorm or dropout: no train/eval mode to switch). Loss
('rate'): cross-entropy at every step, averaged over the steps; optimizer: Adam (optax,
torch's defaults) with the learning rate of torch's ``CosineAnnealingLR`` set before each epoch.

Training is the adapter's loop: ``h = sadp_core.attach(model, ...)``,
``grad_fn = h.value_and_grad(loss_fn, jit=False)`` inside an ``nnx.jit`` training step,
``for idx, w in h.batches(batch_size)`` (``drop_last=False``: the short last batch is
trained), ``h.update(idx, scores)``.

Timing: as for torch, wall (``perf_counter``) and process CPU time of the epoch's training
steps, planning included (``h.batches``), evaluation excluded. JAX dispatches asynchronously,
so the timed region ends after the updated parameters are ready and the handle has written
the epoch's waiting scores into its table. Compilation is kept out of it: the first time a
batch size occurs in a run (128, and each size of a short last batch), the step is compiled
by running it on a throwaway copy of the model and optimizer, outside the timer; the real
step then finds it compiled. The time spent so is recorded (``jit_warmup_s``).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sadp_core

from ..data import Data
from ..methods import attach_options
from ..models.jax import JaxModel, build_model, per_example_loss
from .common import Run, RunSpec, Settings

# Every run builds its own jitted step, but all runs of one shape compile to the same
# program: a persistent compilation cache (a directory that lives as long as the process)
# lets XLA compile each program once per process instead of once per run. Compilation is
# outside the timed region either way; this only shortens the whole benchmark.
_CACHE = tempfile.TemporaryDirectory(prefix="sadp-bench-xla-")
jax.config.update("jax_compilation_cache_dir", _CACHE.name)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """torch's ``CosineAnnealingLR(T_max=epochs)`` (eta_min 0) at ``epoch``."""
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


class JaxParts:
    """Model, optimizer, handle and jitted steps of one JAX run (:class:`JaxRun`)."""

    def __init__(self, spec: RunSpec, data: Data, settings: Settings, attach_options: dict[str, Any]) -> None:
        self.settings = settings
        self.model = build_model(
            spec.model, data.side, hidden=settings.hidden, steps=settings.steps, seed=spec.seed
        )
        self.handle = sadp_core.attach(
            self.model, num_examples=len(data.train_y), prune_ratio=spec.prune_ratio,
            epochs=settings.epochs, seed=spec.seed, **{**attach_options, **dict(settings.pruner)},
        )  # fmt: skip
        adam = optax.inject_hyperparams(optax.adam)(learning_rate=settings.lr)
        self.optimizer = nnx.Optimizer(self.model, adam, wrt=nnx.Param)
        self.train_x = np.ascontiguousarray(data.train_x.numpy())
        self.train_y = data.train_y.numpy().astype(np.int32)
        self.test_x = np.ascontiguousarray(data.test_x.numpy())
        self.test_y = data.test_y.numpy()
        loss_kind = settings.loss
        self.traces = 0

        def loss_fn(model: JaxModel, x: jax.Array, y: jax.Array) -> jax.Array:
            return per_example_loss(model(x), y, loss_kind)

        grad_fn = self.handle.value_and_grad(loss_fn, jit=False)

        @nnx.jit
        def train_step(
            model: JaxModel, optimizer: Any, x: jax.Array, y: jax.Array, w: jax.Array
        ) -> jax.Array:
            self.traces += 1  # at trace time only: counts compilations
            (_, scores), grads = grad_fn(model, x, y, w)
            optimizer.update(model, grads)
            return scores

        @nnx.jit
        def predict(model: JaxModel, x: jax.Array) -> jax.Array:
            return model(x).mean(0).argmax(1)

        self.train_step, self.predict = train_step, predict
        self.compiled: set[int] = set()
        self.warmup_s = 0.0

    def train_steps(self, epoch: int, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        """One epoch of training steps; examples seen and the (wall, CPU) seconds spent compiling."""
        lr = self.optimizer.opt_state.hyperparams["learning_rate"]
        lr[...] = jnp.asarray(cosine_lr(self.settings.lr, epoch, self.settings.epochs), jnp.float32)
        batches = self.handle.batches(self.settings.batch_size)
        iterable = batches if bar is None else bar(batches, len(batches))
        seen, warm_wall, warm_cpu = 0, 0.0, 0.0
        for idx, w in iterable:
            x, y = self.train_x[idx], self.train_y[idx]
            if len(idx) not in self.compiled:  # compile on a throwaway copy, outside the timer
                wall, cpu = time.perf_counter(), time.process_time()
                copy = nnx.clone(self.model), nnx.clone(self.optimizer)
                jax.block_until_ready(self.train_step(*copy, x, y, w))
                self.compiled.add(len(idx))
                warm_wall += time.perf_counter() - wall
                warm_cpu += time.process_time() - cpu
            scores = self.train_step(self.model, self.optimizer, x, y, w)
            self.handle.update(idx, scores)
            seen += len(idx)
        jax.block_until_ready(nnx.state(self.model))
        self.handle.scores  # noqa: B018 - writes the epoch's waiting scores (host copy) inside the timer
        self.warmup_s += warm_wall
        return seen, warm_wall, warm_cpu

    def evaluate(self, batch_size: int, limit: int | None = None) -> float:
        """Test accuracy (0..1) on the first ``limit`` test examples (all if None)."""
        size = len(self.test_y) if limit is None else min(limit, len(self.test_y))
        correct = 0
        for start in range(0, size, batch_size):
            stop = min(start + batch_size, size)
            predicted = np.asarray(self.predict(self.model, self.test_x[start:stop]))
            correct += int((predicted == self.test_y[start:stop]).sum())
        return correct / size


@dataclass
class JaxRun(Run):
    """A run of a spyx network (MLP or conv) through the JAX adapter: same epochs, timer and
    evaluation points as the torch runs; compilation kept out of the timer (:class:`JaxParts`)."""

    def _setup(self) -> None:
        self.parts = JaxParts(self.spec, self.data, self.own_settings, attach_options(self.spec.method))
        self.model, self.handle = self.parts.model, self.parts.handle

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        return self.parts.train_steps(self.epoch, bar)

    def _evaluate(self, limit: int | None) -> float:
        return self.parts.evaluate(self.settings.eval_batch, limit)

    def _extra_fields(self) -> dict[str, Any]:
        return {"jit_warmup_s": self.parts.warmup_s, "jit_compilations": self.parts.traces}

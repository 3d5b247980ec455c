"""Training runs of the SNN benchmark, timed side by side (``sadp_bench.py``).

A *comparison* is every run of one (framework, model, seed): the full-data run and each
(method, pruning ratio). Its runs live in one process, each with its own model, optimizer
and ``sadp_core.attach`` handle, and train **round-robin, one epoch at a time** (in an order
reshuffled every epoch), so that all of them see the same period of machine load; the
timer covers only a run's own training steps (planning included, evaluation excluded).

Each run trains as a user would: ``h = sadp_core.attach(model, ...)``, then for each epoch
one pass over ``h.batch_sampler(batch_size)``, and the loss of every batch through
``h.weighted_loss(per_example_losses, indices)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from bench_models import Data, build_model, per_example_loss, predict, reset
from torch import nn
from tqdm import tqdm

import sadp_core

METHODS = (
    "full", "fewer_epochs", "random", "infobatch", "seta", "ucb", "eps_greedy", "loss", "sadp",
    "sadp_unbiased", "sadp_uncorrected", "sadp_all", "oracle",
)  # fmt: skip
"""Benchmark method names. ``fewer_epochs`` trains on all data for ``round((1 - r) E)``
epochs with its own cosine schedule (:func:`run_epochs`): what a user would do instead of
pruning. ``sadp`` is the library's default; ``sadp_unbiased`` and ``sadp_uncorrected`` are
its ablations with ``correction="unbiased"`` (Horvitz-Thompson weights throughout) and
``correction="none"`` (weight 1). ``sadp_all`` is SADP with ``scope="all"``; ``oracle`` is
SADP with the exact per-example whole-model gradient norm as score (``scope="all",
score="exact"``: the ghost-norm identity on every Linear layer, exact for the MLP, whose
parameters are all in Linear layers; not available for the conv model)."""


@dataclass(frozen=True)
class Settings:
    """What every run of a benchmark shares."""

    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    hidden: int = 256
    steps: int = 4
    loss: str = "rate"
    eval_batch: int = 1000
    curve_test_size: int | None = None  # test examples behind each per-epoch point (None: all)
    pruner: tuple[tuple[str, Any], ...] = ()  # Pruner options: smoothing, warmup_epochs, anneal_fraction


@dataclass(frozen=True)
class RunSpec:
    """One run: which network, which method, which pruning ratio, which seed."""

    framework: str
    model: str
    method: str
    prune_ratio: float
    seed: int

    @property
    def label(self) -> str:
        return "full" if self.method == "full" else f"{self.method} r={self.prune_ratio:g}"


def attach_options(method: str) -> dict[str, Any]:
    """``sadp_core.attach`` options of a benchmark method."""
    if method == "fewer_epochs":
        return {"method": "full"}
    if method in ("sadp_unbiased", "sadp_uncorrected"):
        return {"method": "sadp", "correction": "unbiased" if method == "sadp_unbiased" else "none"}
    if method == "sadp_all":
        return {"method": "sadp", "scope": "all"}
    if method == "oracle":
        return {"method": "sadp", "scope": "all", "score": "exact"}
    return {"method": method}


def supported(model: str, method: str, framework: str = "snntorch") -> bool:
    """The oracle needs Linear-only networks (the exact score covers Linear layers); the JAX
    runs cover the MLP and the readout-scoped methods only (``bench_jax.METHODS``)."""
    if framework == "jax":
        return model == "mlp" and method in JAX_METHODS
    return not (method == "oracle" and model != "mlp")


def run_epochs(spec: RunSpec, epochs: int) -> int:
    """Epochs a run trains for: ``round((1 - r) E)`` (at least 1) for ``fewer_epochs``, else ``E``."""
    if spec.method == "fewer_epochs":
        return max(1, round((1 - spec.prune_ratio) * epochs))
    return epochs


JAX_METHODS = (
    "full", "fewer_epochs", "random", "infobatch", "seta", "ucb", "eps_greedy", "loss", "sadp",
    "sadp_unbiased", "sadp_uncorrected",
)  # fmt: skip
"""Methods of the JAX runs (the JAX adapter scores the readout only: no ``sadp_all`` or oracle)."""


@dataclass
class Run:
    """One training run with its own model, optimizer, schedule and handle."""

    spec: RunSpec
    data: Data
    settings: Settings
    model: nn.Module = field(init=False)
    handle: Any = field(init=False)
    curve: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    examples: int = 0
    final_accuracy: float | None = None

    @property
    def own_settings(self) -> Settings:
        """The shared settings with this run's own number of epochs (:func:`run_epochs`)."""
        return replace(self.settings, epochs=run_epochs(self.spec, self.settings.epochs))

    @property
    def done(self) -> bool:
        return self.epoch >= self.own_settings.epochs

    def __post_init__(self) -> None:
        spec, settings = self.spec, self.own_settings
        torch.manual_seed(spec.seed)  # the same initial weights for every method of a comparison
        self.model = build_model(
            spec.framework, spec.model, self.data.side, hidden=settings.hidden, steps=settings.steps
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=settings.epochs)
        self.handle = sadp_core.attach(
            self.model, num_examples=len(self.data.train_y), prune_ratio=spec.prune_ratio,
            epochs=settings.epochs, seed=spec.seed, **attach_options(spec.method), **dict(settings.pruner),
        )  # fmt: skip
        self.sampler = self.handle.batch_sampler(settings.batch_size)
        self.epoch = 0

    def train_epoch(self, bar: Callable[[Any, int, str], Any] | None = None) -> None:
        """The handle's next epoch; times it (wall and process CPU) and then evaluates."""
        wall, cpu = time.perf_counter(), time.process_time()
        labelled = None if bar is None else (lambda it, total: bar(it, total, self.spec.label))
        seen, skip_wall, skip_cpu = self._train_steps(labelled)
        wall = time.perf_counter() - wall - skip_wall
        cpu = time.process_time() - cpu - skip_cpu
        self.wall_s += wall
        self.cpu_s += cpu
        self.examples += seen
        phase = self.handle.plan(self.epoch).phase
        accuracy = self._evaluate(self.settings.curve_test_size)
        self.curve.append(
            {"epoch": self.epoch, "phase": phase, "examples": seen, "epoch_wall_s": wall,
             "wall_s": self.wall_s, "cpu_s": self.cpu_s, "test_accuracy": accuracy}
        )  # fmt: skip
        self.epoch += 1
        if self.epoch == self.own_settings.epochs:
            full_test = self.settings.curve_test_size is None
            self.final_accuracy = accuracy if full_test else self._evaluate(None)

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        """One epoch of training steps: examples seen, and (wall, CPU) seconds not to count."""
        model, handle, optimizer = self.model, self.handle, self.optimizer
        x_all, y_all = self.data.train_x, self.data.train_y
        loss_kind = self.settings.loss
        model.train()
        batches = self.sampler if bar is None else bar(self.sampler, len(self.sampler))
        seen = 0
        for batch in batches:
            index = torch.as_tensor(batch)
            losses = per_example_loss(model(x_all[index]), y_all[index], loss_kind)
            loss = handle.weighted_loss(losses, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            reset(model)
            seen += len(batch)
        self.scheduler.step()
        return seen, 0.0, 0.0

    def _evaluate(self, limit: int | None) -> float:
        return evaluate(self.model, self.data, self.settings.eval_batch, limit)

    def record(self, data_name: str) -> dict[str, Any]:
        """Every figure of the run (``speedup`` is added by :func:`add_speedups`)."""
        stats = self.handle.stats
        spec, settings = self.spec, self.settings
        return {
            "framework": spec.framework,
            "model": spec.model,
            "method": spec.method,
            "prune_ratio": spec.prune_ratio,
            "seed": spec.seed,
            "test_accuracy": self.final_accuracy,
            "train_wall_s": self.wall_s,
            "train_cpu_s": self.cpu_s,
            "processed_fraction": self.examples / (settings.epochs * len(self.data.train_y)),
            "theoretical_speedup": settings.epochs * len(self.data.train_y) / self.examples,
            "run_epochs": self.own_settings.epochs,
            "examples_processed": self.examples,
            "epochs": settings.epochs,
            "train_size": len(self.data.train_y),
            "test_size": len(self.data.test_y),
            "curve_test_size": settings.curve_test_size or len(self.data.test_y),
            "dataset": data_name,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "steps": settings.steps,
            "loss": settings.loss,
            "attach": {**attach_options(spec.method), **dict(settings.pruner)},
            "unscored_examples": stats.unscored_examples,
            "curve": self.curve,
            **self._extra_fields(),
        }

    def _extra_fields(self) -> dict[str, Any]:
        return {}


@dataclass
class JaxRun(Run):
    """A run of the spyx MLP through the JAX adapter (``bench_jax``): same epochs, timer and
    evaluation points as :class:`Run`; compilation kept out of the timer."""

    def __post_init__(self) -> None:
        import bench_jax

        options = attach_options(self.spec.method)
        self.parts = bench_jax.JaxParts(self.spec, self.data, self.own_settings, options)
        self.model, self.handle = self.parts.model, self.parts.handle
        self.epoch = 0

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        return self.parts.train_steps(self.epoch, bar)

    def _evaluate(self, limit: int | None) -> float:
        return self.parts.evaluate(self.settings.eval_batch, limit)

    def _extra_fields(self) -> dict[str, Any]:
        return {"jit_warmup_s": self.parts.warmup_s, "jit_compilations": self.parts.traces}


def make_run(spec: RunSpec, data: Data, settings: Settings) -> Run:
    """A :class:`JaxRun` for framework ``jax``, else a torch :class:`Run`."""
    return (JaxRun if spec.framework == "jax" else Run)(spec, data, settings)


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int, limit: int | None = None) -> float:
    """Test accuracy (0..1) on the first ``limit`` test examples (all if None); leaves the
    model in training mode with its state reset."""
    model.eval()
    correct = 0
    size = len(data.test_y) if limit is None else min(limit, len(data.test_y))
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        outputs = model(data.test_x[start:stop])
        correct += int((predict(outputs) == data.test_y[start:stop]).sum())
        reset(model)
    model.train()
    return correct / size


def run_comparison(
    specs: list[RunSpec],
    data: Data,
    settings: Settings,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train ``specs`` (one of them ``full``) round-robin, one epoch each in turn; records."""
    runs = [make_run(spec, data, settings) for spec in specs]
    first = specs[0]
    rng = np.random.default_rng([first.seed, 7])

    def bar(iterable: Any, total: int, label: str) -> Any:
        description = f"{label:<16} epoch {run_epoch + 1}/{settings.epochs}"
        return tqdm(iterable, total=total, desc=description, leave=False, disable=progress is False)

    for run_epoch in range(settings.epochs):
        for position in rng.permutation(len(runs)):
            run = runs[position]
            if run.done:  # fewer_epochs: its own, shorter schedule is over
                continue
            run.train_epoch(bar if progress is not False else None)
            point = run.curve[-1]
            log(
                f"{run.spec.framework}/{run.spec.model} seed {run.spec.seed} {run.spec.label:<16} "
                f"epoch {run_epoch + 1}/{settings.epochs} ({point['phase']}): "
                f"test accuracy {point['test_accuracy']:.4f}, {point['examples']} examples, "
                f"{point['epoch_wall_s']:.2f} s"
            )
    records = [run.record(data.name) for run in runs]
    for run in runs:
        run.handle.detach()
    add_speedups(records)
    return records


def add_speedups(records: list[dict[str, Any]]) -> None:
    """``speedup`` = wall time of the full-data run of the same framework, model and seed / this."""
    full = {(r["framework"], r["model"], r["seed"]): r for r in records if r["method"] == "full"}
    for record in records:
        reference = full.get((record["framework"], record["model"], record["seed"]))
        if reference is None:
            continue
        record["speedup"] = reference["train_wall_s"] / record["train_wall_s"]
        record["speedup_cpu"] = reference["train_cpu_s"] / record["train_cpu_s"]
        record["speedup_over_max"] = record["speedup"] / record["theoretical_speedup"]
        record["accuracy_change"] = record["test_accuracy"] - reference["test_accuracy"]

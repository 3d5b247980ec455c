"""What every training run of the SNN benchmark shares, whatever its framework.

A *comparison* is every run of one (framework, model, seed): the full-data run and each
(method, pruning ratio). Its runs live in one process, each with its own model, optimizer
and ``sadp_core.attach`` handle, and train **round-robin, one epoch at a time**
(:func:`sadp_bench.train.compare.run_comparison`), so that all of them see the same period
of machine load; the timer covers only a run's own training steps (planning included,
evaluation excluded).

:class:`Run` is the interface: the epoch, its timer, the per-epoch curve and the record are
here; a framework supplies the model, the handle, one epoch of training steps and the test
accuracy (:class:`sadp_bench.train.torch.TorchRun`, :class:`sadp_bench.train.jax.JaxRun`).
This module imports neither torch nor JAX.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..data import Data
from ..methods import attach_options, run_epochs


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
    device: str = "cpu"  # torch runs: where model and data live ("cuda": a GPU); JAX: its default device


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


@dataclass
class Run:
    """One training run with its own model, optimizer, schedule and handle.

    Subclasses build them in :meth:`_setup` (``self.model``, ``self.handle``) and implement
    :meth:`_train_steps` and :meth:`_evaluate`.
    """

    spec: RunSpec
    data: Data
    settings: Settings
    model: Any = field(init=False)
    handle: Any = field(init=False)
    curve: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    examples: int = 0
    final_accuracy: float | None = None

    def __post_init__(self) -> None:
        self._setup()
        self.epoch = 0

    @property
    def own_settings(self) -> Settings:
        """The shared settings with this run's own number of epochs (``fewer_epochs`` trains for
        fewer, with its own learning-rate schedule; :func:`sadp_bench.methods.run_epochs`)."""
        spec = self.spec
        return replace(self.settings, epochs=run_epochs(spec.method, spec.prune_ratio, self.settings.epochs))

    @property
    def done(self) -> bool:
        """Whether the run has trained all its own epochs."""
        return self.epoch >= self.own_settings.epochs

    def _setup(self) -> None:
        """Build ``self.model``, its optimizer and ``self.handle``."""
        raise NotImplementedError

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        """One epoch of training steps: examples seen, and (wall, CPU) seconds not to count."""
        raise NotImplementedError

    def _evaluate(self, limit: int | None) -> float:
        """Test accuracy (0..1) on the first ``limit`` test examples (all if None)."""
        raise NotImplementedError

    def _extra_fields(self) -> dict[str, Any]:
        """Fields of the record that only this framework has."""
        return {}

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
            # of the comparison's epochs x N (fewer_epochs trains fewer epochs of its own)
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
            "curve": self.curve,
            "unscored_examples": stats.unscored_examples,
            **self._extra_fields(),
        }


def add_speedups(records: list[dict[str, Any]]) -> None:
    """``speedup`` = wall time of the full-data run of the same framework, model and seed / this."""
    full = {(r["framework"], r["model"], r["epochs"], r["seed"]): r for r in records if r["method"] == "full"}
    for record in records:
        reference = full.get((record["framework"], record["model"], record["epochs"], record["seed"]))
        if reference is None:
            continue
        record["speedup"] = reference["train_wall_s"] / record["train_wall_s"]
        record["speedup_cpu"] = reference["train_cpu_s"] / record["train_cpu_s"]
        record["speedup_over_max"] = record["speedup"] / record["theoretical_speedup"]
        record["accuracy_change"] = record["test_accuracy"] - reference["test_accuracy"]

"""A comparison: every run of one (framework, model, seed), trained round-robin by epoch.

The framework's run class is imported only when a run of it is made, so torch runs never
import JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data import Data
from .common import Run, RunSpec, Settings, add_speedups


def make_run(spec: RunSpec, data: Data, settings: Settings) -> Run:
    """A :class:`~sadp_bench.train.jax.JaxRun` for framework ``jax``, else a torch run."""
    if spec.framework == "jax":
        from .jax import JaxRun

        return JaxRun(spec, data, settings)
    from .torch import TorchRun

    return TorchRun(spec, data, settings)


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

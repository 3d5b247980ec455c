"""Speed and memory of the sadp-core hot paths: ``Pruner.plan`` and ``Pruner.update``.

Run with sadp-core installed (``pip install "sadp-core[bench]"``, or ``pip install .``)::

    sadp-bench speed                                   # N = 10,000,000
    sadp-bench speed --num-examples 1000000 --repeats 3  # quick (nox -s bench)

(``python benchmarks/core_speed.py`` from a clone is the same.)

What it measures (figures are printed, never asserted: shared CPUs are noisy):

1. ``Pruner.plan(epoch)`` of a pruning epoch, after a warm-up plan and scores for all N
   examples: median and min over ``--repeats`` fresh epochs. Target for ``"sadp"``: < 1 s
   at N = 10M; ``"random"``, ``"infobatch"`` and sadp with ``replacement=True`` are shown
   for comparison.
2. Peak extra memory of one ``plan()`` call (tracemalloc, which numpy reports its buffers
   to), in bytes per example, at N and N/10: equal figures mean O(N) memory.
3. ``Pruner.update(indices, scores)`` of one batch: best per-call time (timeit). Target:
   < 20 us for int64 indices and float64 scores; float32 scores and Python lists are shown
   for comparison.
4. Where a sadp ``plan()`` spends its time: the pieces it runs, timed one by one.

The targets are for N = 10M; at other sizes the plan ratio is only indicative.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import sadp_core
from sadp_core import Pruner, Schedule, inclusion_probabilities, systematic_sample
from sadp_core.ordering import EpochOrders

PLAN_TARGET_S = 1.0
UPDATE_TARGET_US = 20.0
PRUNE_RATIO = 0.3
SEED = 0

Row = tuple[str, str, str, str, str]  # measure, value, target, ratio, verdict


def make_pruner(num_examples: int, repeats: int, method: str = "sadp", replacement: bool = False) -> Pruner:
    """A Pruner past its warm-up epoch, with a lognormal score for every example."""
    epochs = 10
    while Schedule(epochs).pruned_epochs < repeats + 1:
        epochs += 1  # enough pruning epochs for the timed plans and the memory measure
    pruner = Pruner(
        num_examples=num_examples,
        prune_ratio=PRUNE_RATIO,
        epochs=epochs,
        seed=SEED,
        method=method,
        replacement=replacement,
    )
    warmup = pruner.plan(0)
    scores: np.ndarray = np.random.default_rng(SEED).lognormal(mean=0.0, sigma=1.0, size=num_examples)
    pruner.update(warmup.indices, scores)
    return pruner


def time_plans(pruner: Pruner, repeats: int, batch_size: int) -> list[float]:
    """Seconds of ``plan(1)``, ``plan(2)``, ...; a batch is scored between plans (not timed)."""
    rng = np.random.default_rng(SEED + 1)
    times = []
    for epoch in range(1, repeats + 1):
        gc.collect()
        start = time.perf_counter()
        plan = pruner.plan(epoch)
        times.append(time.perf_counter() - start)
        batch = plan.indices[:batch_size]
        pruner.update(batch, rng.lognormal(size=batch.shape[0]))
    return times


def bench_plan(num_examples: int, repeats: int, batch_size: int) -> tuple[list[Row], Pruner, float]:
    """Measurement 1. Returns the rows, the sadp pruner (reused later) and its median."""
    rows: list[Row] = []
    sadp: Pruner | None = None
    sadp_median = 0.0
    for label, method, replacement in [
        ("sadp", "sadp", False),
        ("random", "random", False),
        ("infobatch", "infobatch", False),
        ("sadp replacement=True", "sadp", True),
    ]:
        pruner = make_pruner(num_examples, repeats, method, replacement)
        times = time_plans(pruner, repeats, batch_size)
        median, best = statistics.median(times), min(times)
        is_target = label == "sadp"
        print(
            f"plan() {label:<22} median {median:7.3f} s   min {best:7.3f} s   "
            f"all: {', '.join(f'{t:.3f}' for t in times)}"
        )
        rows.append(_row(f"plan() {label}, median", median, "s", PLAN_TARGET_S if is_target else None))
        rows.append(_row(f"plan() {label}, min", best, "s", PLAN_TARGET_S if is_target else None))
        if is_target:
            sadp, sadp_median = pruner, median
        else:
            del pruner
    assert sadp is not None
    return rows, sadp, sadp_median


def plan_peak_bytes(pruner: Pruner, epoch: int) -> tuple[int, int]:
    """(peak extra bytes during ``plan(epoch)``, bytes still held after it) per tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        pruner.plan(epoch)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, after - before


def bench_memory(sadp: Pruner, num_examples: int, repeats: int) -> list[Row]:
    """Measurement 2: at N (the sadp pruner, next unused epoch) and at N/10 (a fresh one)."""
    rows: list[Row] = []
    small = max(1, num_examples // 10)
    for size, pruner, epoch in [(num_examples, sadp, repeats + 1), (small, make_pruner(small, 1), 1)]:
        peak, held = plan_peak_bytes(pruner, epoch)
        print(
            f"plan() memory at N={size:>11,}: peak extra {peak / 2**20:9.1f} MiB = "
            f"{peak / size:6.1f} B/example; held after (the new plan) {held / size:6.1f} B/example"
        )
        rows.append((f"plan() peak memory, N={size:,}", f"{peak / size:.1f} B/example", "O(N)", "-", "info"))
    return rows


def bench_update(pruner: Pruner, batch_size: int, repeats: int) -> list[Row]:
    """Measurement 3: best per-call time of one ``update`` over ``repeats`` timeit rounds."""
    rng = np.random.default_rng(SEED + 2)
    batch = min(batch_size, pruner.num_examples)
    indices = rng.choice(pruner.num_examples, size=batch, replace=False)
    scores = rng.lognormal(size=batch)
    rows: list[Row] = []
    cases: list[tuple[str, tuple[Any, Any], bool]] = [
        ("int64 + float64", (indices.astype(np.int64), scores.astype(np.float64)), True),
        ("int64 + float32", (indices.astype(np.int64), scores.astype(np.float32)), False),
        ("Python lists", (indices.tolist(), scores.tolist()), False),
    ]
    for label, args, is_target in cases:
        timer = timeit.Timer(lambda args=args: pruner.update(*args))  # type: ignore[misc]
        loops, _ = timer.autorange()
        loops = max(loops, 1000)
        best_us = min(timer.repeat(repeat=max(repeats, 3), number=loops)) / loops * 1e6
        print(
            f"update() batch {indices.shape[0]}, {label:<16} {best_us:8.2f} us/call (best of "
            f"{max(repeats, 3)} x {loops} loops)"
        )
        rows.append(
            _row(
                f"update() B={indices.shape[0]}, {label}",
                best_us,
                "us",
                UPDATE_TARGET_US if is_target else None,
            )
        )
    return rows


def bench_breakdown(pruner: Pruner, repeats: int, plan_median: float) -> list[Row]:
    """Measurement 4: the pieces of a sadp ``plan()`` (see ``ImportanceSampling.select``)."""
    size, budget = pruner.num_examples, pruner.budget
    smoothing = pruner.method.smoothing  # type: ignore[attr-defined]  # sadp's ImportanceSampling
    rng = np.random.default_rng(SEED + 3)
    scores = np.asarray(pruner.scores)
    orders = EpochOrders(size, SEED)
    orders.base  # noqa: B018 (drawn once per run, like a Pruner does)
    probabilities = inclusion_probabilities(scores, budget, smoothing=smoothing)
    order = orders.draw(rng)
    _, kept = systematic_sample(probabilities, order, 0.5, return_probabilities=True)

    seeds = np.random.SeedSequence(SEED, spawn_key=(1,))
    pieces: list[tuple[str, Callable[[], Any]]] = [
        ("Generator(PCG64(SeedSequence))", lambda: np.random.Generator(np.random.PCG64(seeds))),
        ("inclusion_probabilities", lambda: inclusion_probabilities(scores, budget, smoothing=smoothing)),
        ("EpochOrders.draw (the epoch's order)", lambda: orders.draw(rng)),
        (
            "systematic_sample",
            lambda: systematic_sample(probabilities, order, 0.5, return_probabilities=True),
        ),
        ("Horvitz-Thompson weights", lambda: budget / (size * kept)),
    ]
    medians = {}
    for name, piece in pieces:
        times = []
        for _ in range(max(1, min(repeats, 3))):
            gc.collect()
            start = time.perf_counter()
            piece()
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    total = sum(medians.values())
    print(f"plan() breakdown at N={size:,} (median of {max(1, min(repeats, 3))} runs each):")
    for name, seconds in medians.items():
        print(f"  {name:<38} {seconds:8.3f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'sum of pieces':<38} {total:8.3f} s   (whole plan(), median above: {plan_median:.3f} s)")
    return [
        (f"  breakdown: {name}", f"{s:.3f} s", "-", f"{100 * s / total:.0f}%", "info")
        for name, s in medians.items()
    ]


def _row(measure: str, value: float, unit: str, target: float | None) -> Row:
    shown = f"{value:.3f} {unit}" if unit == "s" else f"{value:.2f} {unit}"
    if target is None:
        return (measure, shown, "-", "-", "info")
    ratio = value / target
    return (measure, shown, f"< {target:g} {unit}", f"{ratio:.2f}", "ok" if ratio < 1 else "MISSED")


def print_environment() -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, sadp-core {sadp_core.__version__} "
        f"({os.path.dirname(sadp_core.__file__)})"
    )
    print(f"CPUs: os.cpu_count() = {os.cpu_count()}, usable = {cpus}; {platform.platform()}")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        print("threadpoolctl not installed (thread-pool info skipped)")
        return
    for pool in threadpool_info():
        print(
            f"thread pool: {pool.get('internal_api')} {pool.get('version')}, "
            f"{pool.get('num_threads')} threads ({pool.get('filepath')})"
        )


def print_table(rows: list[Row]) -> None:
    header: Row = ("measure", "value", "target", "ratio", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if row is header:
            print(line)
    print(line)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line), measure, print; 0 when done."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-examples", type=int, default=10_000_000, help="N (default 10,000,000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed plans / timeit rounds (default 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch of update() (default 128)")
    args = parser.parse_args(argv)
    if args.num_examples < 10 or args.repeats < 1 or args.batch_size < 1:
        parser.error("need --num-examples >= 10, --repeats >= 1, --batch-size >= 1")

    print_environment()
    print(
        f"N = {args.num_examples:,}, prune_ratio = {PRUNE_RATIO}, repeats = {args.repeats}, "
        f"batch = {args.batch_size}\n"
    )
    start = time.perf_counter()
    rows, sadp, sadp_median = bench_plan(args.num_examples, args.repeats, args.batch_size)
    print()
    rows += bench_memory(sadp, args.num_examples, args.repeats)
    print()
    rows += bench_update(sadp, args.batch_size, args.repeats)
    print()
    rows += bench_breakdown(sadp, args.repeats, sadp_median)
    print()
    if args.num_examples != 10_000_000:
        print(
            f"note: the plan() target is for N = 10,000,000; at N = {args.num_examples:,} its ratio "
            "is only indicative"
        )
    print_table(rows)
    print(f"total benchmark time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

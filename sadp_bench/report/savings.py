"""The headline metric: time to accuracy, or how much each method saves without losing accuracy.

A *setting* is one (framework, model, epochs) comparison: every method of it trained side
by side against the same full-data runs, seed by seed. For one method and one prune ratio,
:func:`paired_points` pairs each seed's run with that seed's full-data run and gives

- ``delta``: the mean over seeds of (accuracy - full accuracy), with its standard error;
- ``wall``, ``cpu``, ``examples``: the mean over seeds of the run's wall time, CPU time and
  examples processed, each as a share of the full-data run's.

:func:`lossless_saving` then picks, among a method's ratios, the cheapest point whose
accuracy stays within ``tolerance`` (0.1 point) of full data *and* below which nothing
dearer fails: a point only counts if every measured point of the same method that costs
more is lossless too, so one lucky draw between two losing ones does not count. The
saving is 1 - its wall-time share (0 if no point qualifies). Only measured points are
used, never an interpolation between them.

>>> def run(method, ratio, seed, accuracy, wall):
...     return {"framework": "jax", "model": "mlp", "epochs": 8, "method": method,
...             "prune_ratio": ratio, "seed": seed, "test_accuracy": accuracy,
...             "train_wall_s": wall, "train_cpu_s": wall, "processed_fraction": wall / 10}
>>> runs = [run("full", 0.0, s, 0.90, 10.0) for s in (0, 1)]
>>> runs += [run("sadp", 0.3, s, 0.8995, 7.0) for s in (0, 1)]
>>> runs += [run("sadp", 0.5, s, 0.897, 5.0) for s in (0, 1)]
>>> best = lossless_saving(paired_points(runs)[("jax", "mlp", 8, "sadp")])
>>> round(best["saving"], 2), best["prune_ratio"]
(0.3, 0.3)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from .summary import settings_of

Setting = tuple[str, str, int]
"""(framework, model, epochs): one side-by-side comparison."""
TOLERANCE = 0.001
"""Within 0.1 point of full data (accuracies are fractions)."""


def setting_of(record: dict[str, Any]) -> Setting:
    return (record["framework"], record["model"], int(record["epochs"]))


def paired_points(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], list[dict[str, Any]]]:
    """(framework, model, epochs, method) -> one point per prune ratio, paired by seed with full data.

    Seeds without a full-data run of the same setting are left out.
    """
    full = {(*setting_of(r), r["seed"]): r for r in records if r["method"] == "full"}
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for r in records:
        reference = full.get((*setting_of(r), r["seed"]))
        if reference is not None:
            key = (*setting_of(r), r["method"], r["prune_ratio"])
            groups[key].append((r, reference))
    points: dict[tuple[str, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for (framework, model, epochs, method, ratio), pairs in sorted(groups.items()):
        deltas = np.array([r["test_accuracy"] - f["test_accuracy"] for r, f in pairs])
        points[(framework, model, epochs, method)].append(
            {
                "prune_ratio": ratio,
                "seeds": len(pairs),
                "delta": float(deltas.mean()),
                "delta_se": float(deltas.std(ddof=1) / np.sqrt(len(deltas)))
                if len(deltas) > 1
                else float("nan"),
                "wall": float(np.mean([r["train_wall_s"] / f["train_wall_s"] for r, f in pairs])),
                "cpu": float(np.mean([r["train_cpu_s"] / f["train_cpu_s"] for r, f in pairs])),
                "examples": float(
                    np.mean([r["processed_fraction"] / f["processed_fraction"] for r, f in pairs])
                ),
            }
        )
    return dict(points)


def lossless_saving(points: list[dict[str, Any]], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The cheapest point (by wall-time share) with it and every dearer point within ``tolerance``.

    Returns that point with ``saving`` = 1 - its wall share added, or, where no point
    qualifies, ``{"saving": 0.0, "prune_ratio": None}`` (full data is the cheapest lossless
    option). The full-data point itself (share 1) never counts as a saving.
    """
    best: dict[str, Any] = {"saving": 0.0, "prune_ratio": None}
    for point in sorted(points, key=lambda p: -p["wall"]):  # dearest first
        if point["delta"] < -tolerance:
            break
        if point["wall"] < 1.0 - 1e-9 and 1.0 - point["wall"] > best["saving"]:
            best = {**point, "saving": 1.0 - point["wall"]}
    return best


def savings_table(records: list[dict[str, Any]], methods: tuple[str, ...]) -> list[str]:
    """Markdown: lossless saving of every method (rows) in every setting (columns)."""
    points = paired_points(records)
    settings = settings_of(points)
    if not settings:
        return []
    header = " | ".join(f"{f}, {m}, {e} epochs" for f, m, e in settings)
    lines = [f"| method | {header} |", "|---|" + "---|" * len(settings)]
    for method in methods:
        if method == "full" or not any((*s, method) in points for s in settings):
            continue
        cells = []
        for setting in settings:
            mine = points.get((*setting, method))
            if not mine:
                cells.append("not run")
                continue
            best = lossless_saving(mine)
            if best["prune_ratio"] is None:
                cells.append("0% (none lossless)")
            else:
                cells.append(
                    f"**{100 * best['saving']:.0f}%** (r={best['prune_ratio']:g}: "
                    f"Δ {100 * best['delta']:+.2f}"
                    f" ± {100 * np.nan_to_num(best['delta_se']):.2f}, CPU {100 * (1 - best['cpu']):.0f}%, "
                    f"examples {100 * (1 - best['examples']):.0f}%)"
                )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def convergence(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting and seed: the full-data run's gain in test accuracy over its last quarter of epochs."""
    rows = []
    for r in records:
        if r["method"] != "full" or len(r.get("curve", [])) < 4:
            continue
        curve = [p["test_accuracy"] for p in r["curve"]]
        start = len(curve) - len(curve) // 4 - 1
        rows.append({"setting": setting_of(r), "seed": r["seed"], "gain": curve[-1] - curve[start],
                     "from_epoch": start + 1, "epochs": len(curve)})  # fmt: skip
    return rows

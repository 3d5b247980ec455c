"""The numbers of the report: merge result directories, then mean and spread over seeds.

Reads ``results.json`` (one record per run), ``meta.json`` and ``probes.json`` of each
input directory; imports numpy only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..methods import METHODS

METHOD_ORDER = METHODS
"""The order of the methods in tables and plots: the registry's (:mod:`sadp_bench.methods`)."""
BASELINES = ("fewer_epochs", "random", "infobatch", "seta", "ucb", "eps_greedy", "loss")
SADP_METHODS = ("sadp",)
Key = tuple[str, str, int, str, float]
"""(framework, model, epochs, method, prune ratio): one row of the summary."""


def settings_of(keys: Iterable[tuple[Any, ...]]) -> list[tuple[str, str, int]]:
    """The distinct (framework, model, epochs) of ``keys`` (summary or point keys), in page
    order: MLP first, then by framework, longer training first."""
    return sorted({(k[0], k[1], k[2]) for k in keys}, key=lambda s: (s[1] != "mlp", s[0], -s[2]))


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def merge(inputs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Records (later inputs replace equal runs), metas, and probes of every input directory."""
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    metas: list[dict[str, Any]] = []
    probes: dict[str, Any] = {"meta": [], "variance": [], "bound": []}
    for directory in inputs:
        for record in _read(directory / "results.json") or []:
            key = (
                record["framework"],
                record["model"],
                record["epochs"],
                record["method"],
                record["prune_ratio"],
                record["seed"],
            )
            runs[key] = record
        meta = _read(directory / "meta.json")
        for item in meta if isinstance(meta, list) else [meta] if meta else []:
            if item not in metas:
                metas.append(item)
        found = _read(directory / "probes.json")
        if found:
            for item in found.get("meta", []) or [
                {k: found[k] for k in ("command", "machine", "dataset", "settings") if k in found}
            ]:
                if item not in probes["meta"]:
                    probes["meta"].append(item)
            for part in ("variance", "bound"):
                probes[part] += [x for x in found.get(part, []) if x not in probes[part]]
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    records = sorted(
        runs.values(),
        key=lambda r: (
            r["model"] != "mlp",
            r["framework"],
            order.get(r["method"], 99),
            r["prune_ratio"],
            r["seed"],
        ),
    )
    return records, metas, probes


def aggregate(records: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Mean, standard deviation and count over seeds per (framework, model, epochs, method, ratio)."""
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["framework"], r["model"], int(r["epochs"]), r["method"], r["prune_ratio"])].append(r)
    summary = {}
    for key, rows in groups.items():
        item: dict[str, Any] = {"n": len(rows)}
        for field in ("test_accuracy", "processed_fraction", "speedup", "theoretical_speedup",
                      "speedup_over_max", "train_wall_s", "speedup_cpu"):  # fmt: skip
            values = np.array([r[field] for r in rows if r.get(field) is not None], dtype=float)
            item[field] = float(values.mean()) if values.size else float("nan")
            item[field + "_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        summary[key] = item
    return summary


def interpolate(points: list[tuple[float, float]], share: float) -> float | None:
    """Accuracy of a baseline at ``share`` (linear between its measured shares), None outside them."""
    points = sorted(points)
    shares = [p[0] for p in points]
    if not points or share < shares[0] - 1e-9 or share > shares[-1] + 1e-9:
        return None
    return float(np.interp(share, shares, [p[1] for p in points]))


def equal_share_rows(
    summary: dict[Key, dict[str, Any]], methods: tuple[str, ...] = SADP_METHODS
) -> list[dict[str, Any]]:
    """Each SADP variant against each baseline at the share the baseline processed at each r.

    The variant's accuracy at that share is read off its own accuracy-vs-share line (its
    measured ratios and the full run, linear in between); None outside that range. Random
    processes exactly what SADP does at the same r, so there the two are measured side by side.
    """
    rows = []
    for framework, model, epochs, baseline, ratio in sorted(summary):
        if baseline not in BASELINES:
            continue
        other = summary[(framework, model, epochs, baseline, ratio)]
        for method in methods:
            points = [
                (v["processed_fraction"], v["test_accuracy"])
                for (f, m, e, b, _), v in summary.items()
                if (f, m, e) == (framework, model, epochs) and b in (method, "full")
            ]
            if len(points) < 2:
                continue
            share = other["processed_fraction"]
            rows.append(
                {"framework": framework, "model": model, "epochs": epochs, "method": method,
                 "baseline": baseline,
                 "prune_ratio": ratio, "share": share, "baseline_accuracy": other["test_accuracy"],
                 "baseline_std": other["test_accuracy_std"], "accuracy": interpolate(points, share)}
            )  # fmt: skip
    return rows

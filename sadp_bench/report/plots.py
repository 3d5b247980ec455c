"""The report's plots (matplotlib, Agg backend): accuracy against time and against share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .summary import METHOD_ORDER, Key
from .tables import run_label


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_main(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy against training wall time, one line per run."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for r in records:
        label = run_label(r)
        curve = r["curve"]
        axis.plot(
            [p["wall_s"] for p in curve], [100 * p["test_accuracy"] for p in curve], marker="o", label=label
        )
    axis.set_xlabel("training wall time (s)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _color(method: str) -> str:
    """The same colour for a method in every panel."""
    return "black" if method == "full" else f"C{METHOD_ORDER.index(method) - 1}"


def _grid(plt: Any, panels: int) -> tuple[Any, list[Any]]:
    columns = min(2, panels)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis in flat[panels:]:
        axis.set_visible(False)
    return figure, flat[:panels]


def _pairs(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["framework"], r["model"]) for r in records}, key=lambda p: (p[1] != "mlp", p[0]))


def plot_accuracy_vs_time(records: list[dict[str, Any]], path: Path) -> None:
    """Per (framework, model): seed-0 curves of the full run and every method at the middle ratio."""
    plt = _pyplot()
    pairs = _pairs(records)
    figure, axes = _grid(plt, len(pairs))
    for axis, (framework, model) in zip(axes, pairs, strict=True):
        mine = [r for r in records if (r["framework"], r["model"]) == (framework, model)]
        seed = min(r["seed"] for r in mine)
        ratios = sorted({r["prune_ratio"] for r in mine if r["method"] != "full"})
        middle = ratios[len(ratios) // 2] if ratios else 0.0
        for r in mine:
            if r["seed"] != seed or (r["method"] != "full" and r["prune_ratio"] != middle):
                continue
            label = "full" if r["method"] == "full" else r["method"]
            style = {"color": _color(r["method"]), "linewidth": 2 if r["method"] == "full" else 1}
            axis.plot([p["wall_s"] for p in r["curve"]], [100 * p["test_accuracy"] for p in r["curve"]],
                      marker=".", label=label, **style)  # fmt: skip
        _label(axis, f"{framework} {model}, r={middle:g}, seed {seed}", "training wall time (s)",
               "test accuracy (%, curve test subset)")  # fmt: skip
    _save(plt, figure, path)


def plot_accuracy_vs_share(summary: dict[Key, dict[str, Any]], path: Path) -> None:
    """Per (framework, model): mean accuracy (± std over seeds) against share processed, per method."""
    plt = _pyplot()
    pairs = sorted({(k[0], k[1]) for k in summary}, key=lambda p: (p[1] != "mlp", p[0]))
    figure, axes = _grid(plt, len(pairs))
    for axis, (framework, model) in zip(axes, pairs, strict=True):
        for method in METHOD_ORDER:
            keys = sorted(k for k in summary if k[:3] == (framework, model, method))
            if not keys:
                continue
            xs = [summary[k]["processed_fraction"] for k in keys]
            ys = [100 * summary[k]["test_accuracy"] for k in keys]
            errors = [100 * np.nan_to_num(summary[k]["test_accuracy_std"]) for k in keys]
            if method == "full":
                axis.errorbar(
                    xs, ys, yerr=errors, marker="*", markersize=12, color="black", label="full", linestyle=""
                )
            else:
                axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=2, label=method, color=_color(method))
        _label(axis, f"{framework} {model}", "share of examples processed", "test accuracy (%)")
    _save(plt, figure, path)


def _label(axis: Any, title: str, xlabel: str, ylabel: str) -> None:
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def _save(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

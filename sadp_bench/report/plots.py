"""The report's plots (matplotlib, Agg backend): accuracy against time and against share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .summary import METHOD_ORDER, Key, settings_of
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
    if method == "full":
        return "black"
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return f"C{index % 10}"


def _grid(plt: Any, panels: int) -> tuple[Any, list[Any]]:
    columns = min(2, panels)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis in flat[panels:]:
        axis.set_visible(False)
    return figure, flat[:panels]


def _method_lines(
    axis: Any, summary: dict[Key, dict[str, Any]], setting: tuple[str, str, int], x: str
) -> None:
    """One line per method through its ratios (mean ± std over seeds), full data as a star."""
    full = summary.get((*setting, "full", 0.0))
    for method in METHOD_ORDER:
        # the largest ratio first, so that the line runs from the cheapest point to full data
        keys = sorted((k for k in summary if k[:4] == (*setting, method)), key=lambda k: -k[4])
        if not keys:
            continue
        xs = [summary[k][x] for k in keys]
        ys = [100 * summary[k]["test_accuracy"] for k in keys]
        errors = [100 * np.nan_to_num(summary[k]["test_accuracy_std"]) for k in keys]
        if method == "full":
            axis.errorbar(
                xs, ys, yerr=errors, marker="*", markersize=12, color="black", label="full", linestyle=""
            )
            continue
        if full is not None:  # each line ends at full data, where every method starts from
            xs, ys, errors = [*xs, full[x]], [*ys, 100 * full["test_accuracy"]], [*errors, 0.0]
        style = {"linewidth": 2.2, "linestyle": "--"} if method == "fewer_epochs" else {"linewidth": 1}
        axis.errorbar(xs, ys, yerr=errors, marker="o", markersize=3, capsize=2, label=method,
                      color=_color(method), **style)  # fmt: skip
    if full is not None:
        axis.axhspan(
            100 * full["test_accuracy"] - 0.1, 100 * full["test_accuracy"] + 0.1, color="grey", alpha=0.15
        )


def _plot_per_setting(summary: dict[Key, dict[str, Any]], path: Path, x: str, xlabel: str, band: str) -> None:
    """One panel per setting: final accuracy (mean ± std over seeds) against ``x``, per method."""
    plt = _pyplot()
    settings = settings_of(summary)
    figure, axes = _grid(plt, len(settings))
    for axis, setting in zip(axes, settings, strict=True):
        _method_lines(axis, summary, setting, x)
        _label(
            axis, f"{setting[0]} {setting[1]}, {setting[2]} epochs{band}", xlabel, "final test accuracy (%)"
        )
    _save(plt, figure, path)


def plot_accuracy_vs_time(summary: dict[Key, dict[str, Any]], path: Path) -> None:
    """Per setting: final accuracy against mean training wall time, per method."""
    _plot_per_setting(summary, path, "train_wall_s", "training wall time (s, mean over seeds)",
                      " (grey: full ± 0.1 point)")  # fmt: skip


def plot_accuracy_vs_share(summary: dict[Key, dict[str, Any]], path: Path) -> None:
    """Per setting: final accuracy against the share of examples processed, per method."""
    _plot_per_setting(summary, path, "processed_fraction", "share of examples processed", "")


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

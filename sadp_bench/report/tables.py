"""The report's tables: the main job's plain-text table and the Markdown tables of the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .summary import METHOD_ORDER, Key, aggregate, merge


def run_label(record: dict[str, Any]) -> str:
    """``all data``, ``all data, 6 epochs`` (fewer epochs) or ``sadp r=0.3``."""
    if record["method"] == "full":
        return "all data"
    if record["method"] == "fewer_epochs":
        return f"all data, {record['run_epochs']} epochs"
    return f"{record['method']} r={record['prune_ratio']:g}"


def main_table(records: list[dict[str, Any]]) -> str:
    """The main job's table: one line per run."""
    header = (
        f"{'run':<20}{'test acc':>10}{'train s':>10}{'share':>8}{'speedup':>9}{'max':>8}{'achieved/max':>14}"
    )
    lines = ["", header, "-" * len(header)]
    for r in records:
        name = run_label(r)
        lines.append(
            f"{name:<20}{100 * r['test_accuracy']:>9.2f}%{r['train_wall_s']:>10.1f}"
            f"{r['processed_fraction']:>8.3f}{r['speedup']:>8.2f}x{r['theoretical_speedup']:>7.2f}x"
            f"{r['speedup_over_max']:>14.2f}"
        )
    return "\n".join(lines)


def pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` (times ``scale``), ``-`` for no value, no ``±`` for a single seed."""
    if np.isnan(mean):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    return text if np.isnan(std) else f"{text} ± {scale * std:.{digits}f}"


def results_tables(summary: dict[Key, dict[str, Any]]) -> list[str]:
    lines = []
    for framework, model in sorted({(k[0], k[1]) for k in summary}, key=lambda p: (p[1] != "mlp", p[0])):
        full = summary.get((framework, model, "full", 0.0))
        lines += [
            f"### {framework}, {model}",
            "",
            "| method | r | seeds | share processed | test accuracy (%) | Δ vs full (points) | "
            "train wall (s) | speedup | max speedup | achieved/max | CPU-time speedup / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        order = {m: i for i, m in enumerate(METHOD_ORDER)}
        keys = sorted(
            (k for k in summary if k[:2] == (framework, model)), key=lambda k: (k[3], order.get(k[2], 99))
        )
        for key in keys:
            v = summary[key]
            delta = 100 * (v["test_accuracy"] - full["test_accuracy"]) if full else float("nan")
            lines.append(
                f"| {key[2]} | {key[3]:g} | {v['n']} | {v['processed_fraction']:.3f} | "
                f"{pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | {delta:+.2f} | "
                f"{v['train_wall_s']:.1f} | {pm(v['speedup'], v['speedup_std'])} | "
                f"{v['theoretical_speedup']:.2f} | {pm(v['speedup_over_max'], v['speedup_over_max_std'])} | "
                f"{v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        lines.append("")
    return lines


def targets(
    summary: dict[Key, dict[str, Any]],
    rows: list[dict[str, Any]],
    probes: dict[str, Any],
    side: dict[str, dict[Key, dict[str, Any]]],
) -> list[str]:
    lines = ["| target | framework, model | measured | met? |", "|---|---|---|---|"]
    for name, table in [("", summary), *sorted(side.items())]:
        for (framework, model, method, ratio), v in sorted(table.items()):
            full = table.get((framework, model, "full", 0.0))
            if method != "sadp" or abs(ratio - 0.3) > 1e-9 or not full:
                continue
            delta = 100 * (v["test_accuracy"] - full["test_accuracy"])
            where = f" (investigation `{name}`)" if name else ""
            lines.append(
                f"| SADP r=0.3 accuracy within 0.3 points of full{where} | {framework}, {model} | "
                f"{delta:+.2f} points ({v['n']} seeds) | {'yes' if delta >= -0.3 else 'no'} |"
            )
    for name, table in [("", summary), *sorted(side.items())]:
        for (framework, model, method, ratio), v in sorted(table.items()):
            if method != "sadp" or abs(ratio - 0.3) > 1e-9 or np.isnan(v["speedup_over_max"]):
                continue
            where = f" (investigation `{name}`)" if name else ""
            lines.append(
                f"| SADP r=0.3 speedup >= 95% of max{where} | {framework}, {model} | "
                f"{100 * v['speedup_over_max']:.0f}% ± {100 * v['speedup_over_max_std']:.0f}% wall clock "
                f"({100 * v['speedup_cpu'] / v['theoretical_speedup']:.0f}% in CPU time) | "
                f"{'yes' if v['speedup_over_max'] >= 0.95 else 'no'} |"
            )
    for row in rows:
        if row["method"] != "sadp" or row["prune_ratio"] not in (0.5, 0.7):
            continue
        if row["accuracy"] is None:
            verdict, measured = "n/a", f"share {row['share']:.3f} is outside SADP's measured range"
        else:
            gap = 100 * (row["accuracy"] - row["baseline_accuracy"])
            verdict, measured = (
                ("yes" if gap >= 0 else "no"),
                f"{gap:+.2f} points at share {row['share']:.3f}",
            )
        lines.append(
            f"| SADP accuracy >= {row['baseline']} r={row['prune_ratio']:g} at equal share | "
            f"{row['framework']}, {row['model']} | {measured} | {verdict} |"
        )
    fresh = {
        (v["framework"], v["model"], v["method"]): v for v in probes["variance"] if v["scores"] == "fresh"
    }
    for (framework, model, method), v in sorted(fresh.items()):
        if method != "sadp" or (framework, model, "random") not in fresh:
            continue
        random = fresh[(framework, model, "random")]["relative_mse"]
        lines.append(
            f"| gradient relative MSE: SADP below random at r={v['prune_ratio']:g} | {framework}, {model} | "
            f"{v['relative_mse']:.4f} vs {random:.4f} | {'yes' if v['relative_mse'] < random else 'no'} |"
        )
    return [*lines, ""]


def probe_tables(probes: dict[str, Any]) -> list[str]:
    lines = []
    if probes["variance"]:
        first = probes["variance"][0]
        lines += [
            f"Checkpoint: {first['checkpoint_epochs']} epochs of full-data training (seed {first['seed']}); "
            f"probe subset: {first['subset']} training examples; {first['draws']} plans per method at "
            f"r = {first['prune_ratio']:g}. Relative MSE = E ||est - G||² / ||G||², est the mean of "
            "w_i g_i over the kept examples (what one epoch of training follows), G the full-subset "
            "mean gradient of all parameters; bias² = ||E est - G||² / ||G||². *Fresh* scores are "
            "computed at the checkpoint, *stale* ones one epoch earlier.",
            "",
            "| framework, model | method | share | rel. MSE, fresh scores | bias², fresh "
            "| rel. MSE, stale scores |",
            "|---|---|---|---|---|---|",
        ]
        stale = {
            (v["framework"], v["model"], v["method"]): v for v in probes["variance"] if v["scores"] == "stale"
        }
        for v in probes["variance"]:
            if v["scores"] != "fresh":
                continue
            old = stale.get((v["framework"], v["model"], v["method"]))
            lines.append(
                f"| {v['framework']}, {v['model']} | {v['method']} | {v['processed_fraction']:.3f} | "
                f"{pm(v['relative_mse'], v['relative_mse_std'], digits=4)} | {v['relative_bias2']:.4f} | "
                f"{pm(old['relative_mse'], old['relative_mse_std'], digits=4) if old else '-'} |"
            )
        lines.append("")
    if probes["bound"]:
        lines += [
            "Spearman correlation of each score with the true per-example gradient norm of the whole "
            "model (all parameters, one example at a time), on the same checkpoint and subset; "
            "min/median ratio = score / true norm (an upper bound on the whole model has min ≥ 1; "
            "readout-only scores bound only the readout's share).",
            "",
            "| framework, model | score | Spearman (fresh) | Spearman (stale scores) | min ratio "
            "| median ratio |",
            "|---|---|---|---|---|---|",
        ]
        for b in probes["bound"]:
            stale_value = "-" if b.get("spearman_stale") is None else f"{b['spearman_stale']:.3f}"
            lines.append(
                f"| {b['framework']}, {b['model']} | {b['label']} | {b['spearman']:.3f} | {stale_value} | "
                f"{b['min_ratio']:.3g} | {b['median_ratio']:.3g} |"
            )
        lines.append("")
    return lines


def investigation_tables(directories: list[Path], out: Path) -> list[str]:
    """One table of the side runs in ``out/investigations/*`` (each against its own full run)."""
    if not directories:
        return []
    lines = [
        "## Investigations",
        "",
        "Side runs that vary one setting, each with its own full-data runs (same seeds), stored "
        f"in `{out.as_posix()}/investigations/<name>/`. Δ is against that directory's full run.",
        "",
        "| investigation | framework, model | method | r | seeds | share | test accuracy (%) | "
        "Δ vs full (points) | CPU-time speedup / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for directory in directories:
        records, metas, _ = merge([directory])
        summary = aggregate(records)
        for key, v in sorted(summary.items(), key=lambda item: (item[0][3], item[0][2])):
            full = summary.get((key[0], key[1], "full", 0.0))
            delta = 100 * (v["test_accuracy"] - full["test_accuracy"]) if full else float("nan")
            lines.append(
                f"| {directory.name} | {key[0]}, {key[1]} | {key[2]} | {key[3]:g} | {v['n']} | "
                f"{v['processed_fraction']:.3f} | {pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | "
                f"{delta:+.2f} | {v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        commands += [f"# {directory.name}", *[m.get("command", "?") for m in metas]]
    return [*lines, "", "```console", *commands, "```", ""]

"""The report's tables: the main job's plain-text table and the Markdown tables of the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .savings import lossless_saving, paired_points
from .summary import METHOD_ORDER, Key, aggregate, merge, settings_of


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


def results_tables(
    summary: dict[Key, dict[str, Any]], points: dict[tuple[Any, ...], list[dict[str, Any]]]
) -> list[str]:
    """One table per setting: every method and ratio, Δ paired by seed with its standard error."""
    lines = []
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for framework, model, epochs in settings_of(summary):
        lines += [
            f"### {framework}, {model}, {epochs} epochs",
            "",
            "| method | r | seeds | share processed | test accuracy (%) | Δ vs full, paired (points) | "
            "train wall (s) | speedup | max speedup | achieved/max | CPU-time speedup / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        keys = sorted(
            (k for k in summary if k[:3] == (framework, model, epochs)),
            key=lambda k: (k[4], order.get(k[3], 99)),
        )
        for key in keys:
            v = summary[key]
            paired = {p["prune_ratio"]: p for p in points.get((*key[:4],), [])}.get(key[4])
            delta = "-" if paired is None else pm(paired["delta"], paired["delta_se"], 100)
            lines.append(
                f"| {key[3]} | {key[4]:g} | {v['n']} | {v['processed_fraction']:.3f} | "
                f"{pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | {delta} | "
                f"{v['train_wall_s']:.1f} | {pm(v['speedup'], v['speedup_std'])} | "
                f"{v['theoretical_speedup']:.2f} | {pm(v['speedup_over_max'], v['speedup_over_max_std'])} | "
                f"{v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        lines.append("")
    return lines


def targets(
    summary: dict[Key, dict[str, Any]],
    rows: list[dict[str, Any]],
    points: dict[tuple[Any, ...], list[dict[str, Any]]],
    method: str = "sadp",
) -> list[str]:
    """The targets of the "SADP that wins" issue for ``method`` (SADP's default, or the grid's
    old default where the default did not run in it), per setting: met or not, with the number."""
    lines = ["| target | setting | measured | met? |", "|---|---|---|---|"]
    for setting in settings_of(summary):
        name = f"{setting[0]}, {setting[1]}, {setting[2]} epochs"
        mine = {p["prune_ratio"]: p for p in points.get((*setting, method), [])}
        if 0.3 in mine:
            d = mine[0.3]
            lines.append(
                f"| {method} r=0.3 within 0.1 point of full | {name} | {100 * d['delta']:+.2f} ± "
                f"{100 * np.nan_to_num(d['delta_se']):.2f} points ({d['seeds']} seeds) | "
                f"{'yes' if d['delta'] >= -0.001 else 'no'} |"
            )
        v = summary.get((*setting, method, 0.3))
        if v is not None and not np.isnan(v["speedup_over_max"]):
            lines.append(
                f"| {method} r=0.3 achieved/theoretical speedup >= 0.95 | {name} | "
                f"{v['speedup_over_max']:.2f} wall clock ({v['speedup_cpu'] / v['theoretical_speedup']:.2f} "
                f"CPU time) | {'yes' if v['speedup_over_max'] >= 0.95 else 'no'} |"
            )
        savings = {
            key[3]: lossless_saving(p)["saving"]
            for key, p in points.items()
            if key[:3] == setting and key[3] != "full"
        }
        if method in savings:
            others = [m for m in savings if not m.startswith("sadp") and m != "oracle"]
            rival = max(others, key=lambda m: savings[m], default=None)
            measured = f"{method} {100 * savings[method]:.0f}%" + (
                f", best other {rival} {100 * savings[rival]:.0f}%" if rival else ""
            )
            largest = rival is None or savings[method] >= savings[rival]
            nobody = savings[method] == 0 and (rival is None or savings[rival] == 0)
            lines.append(
                f"| {method}'s lossless saving the largest | {name} | "
                f"{'no method is lossless' if nobody else measured} | "
                f"{'n/a' if nobody else 'yes' if largest else 'no'} |"
            )
            lines.append(
                f"| {method}'s lossless saving >= 35% | {name} | {100 * savings[method]:.0f}% | "
                f"{'yes' if savings[method] >= 0.35 else 'no'} |"
            )
        losses = [
            row for row in rows
            if (row["framework"], row["model"], row["epochs"]) == setting and row["method"] == method
            and row["accuracy"] is not None and row["accuracy"] < row["baseline_accuracy"]
        ]  # fmt: skip
        compared = [
            row for row in rows
            if (row["framework"], row["model"], row["epochs"]) == setting and row["method"] == method
            and row["accuracy"] is not None
        ]  # fmt: skip
        if compared:
            worst = min(losses, key=lambda r: r["accuracy"] - r["baseline_accuracy"]) if losses else None
            detail = (
                f"{len(compared) - len(losses)} of {len(compared)} comparisons"
                + (f"; worst: {worst['baseline']} r={worst['prune_ratio']:g} by "
                   f"{100 * (worst['baseline_accuracy'] - worst['accuracy']):.2f} points" if worst else "")
            )  # fmt: skip
            lines.append(
                f"| {method} at or above every baseline at equal share | {name} | {detail} | "
                f"{'no' if losses else 'yes'} |"
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
        for key, v in sorted(summary.items(), key=lambda item: (item[0][4], item[0][3])):
            full = summary.get((*key[:3], "full", 0.0))
            delta = 100 * (v["test_accuracy"] - full["test_accuracy"]) if full else float("nan")
            lines.append(
                f"| {directory.name} | {key[0]}, {key[1]}, {key[2]} epochs | {key[3]} | {key[4]:g} | "
                f"{v['n']} | "
                f"{v['processed_fraction']:.3f} | {pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | "
                f"{delta:+.2f} | {v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        commands += [f"# {directory.name}", *[m.get("command", "?") for m in metas]]
    return [*lines, "", "```console", *commands, "```", ""]


def ablation_table(records: list[dict[str, Any]]) -> str:
    """A Markdown table of Δ vs full data, paired by seed: one row per method, one column
    per setting and prune ratio (``Δ ± standard error (seeds)``, in points).

    Runs of one ablation are paired with the full-data runs of the same directories, so pass
    the records of one sweep only (full-data runs of the same seed differ between sweeps).

    >>> def run(method, ratio, seed, accuracy):
    ...     return {"framework": "jax", "model": "mlp", "epochs": 8, "method": method,
    ...             "prune_ratio": ratio, "seed": seed, "test_accuracy": accuracy,
    ...             "train_wall_s": 1.0, "train_cpu_s": 1.0, "processed_fraction": 1.0 - ratio}
    >>> records = [run("full", 0.0, s, 0.9) for s in (0, 1)]
    >>> records += [run("sadp", 0.5, 0, 0.899), run("sadp", 0.5, 1, 0.897)]
    >>> print(ablation_table(records))
    | method | jax mlp 8 ep., r = 0.5 |
    |---|---|
    | sadp | -0.20 ± 0.10 (2) |
    """
    points = paired_points(records)
    columns = sorted(
        {(*key[:3], p["prune_ratio"]) for key, ps in points.items() if key[3] != "full" for p in ps}
    )
    methods = sorted({key[3] for key in points if key[3] != "full"}, key=_method_rank)
    lines = [
        "| method | " + " | ".join(f"{f} {m} {e} ep., r = {r:g}" for f, m, e, r in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method in methods:
        cells = []
        for framework, model, epochs, ratio in columns:
            found = [
                p for p in points.get((framework, model, epochs, method), []) if p["prune_ratio"] == ratio
            ]
            cells.append(
                f"{pm(found[0]['delta'], found[0]['delta_se'], 100)} ({found[0]['seeds']})" if found else "-"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _method_rank(method: str) -> tuple[int, str]:
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return (order.get(method, len(order)), method)

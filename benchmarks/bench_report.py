"""Tables, plots and ``docs/benchmarks.md`` from the benchmark's JSON (``sadp_bench.py report``).

Everything in the report is computed from ``results.json`` (one record per run),
``probes.json`` and ``meta.json``; the hand-written analysis comes from
``notes.txt`` beside them, included verbatim. Regenerate rather than edit::

    python benchmarks/sadp_bench.py report --inputs docs/benchmarks
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

METHOD_ORDER = ("full", "random", "infobatch", "ucb", "eps_greedy", "loss", "sadp", "sadp_all", "oracle")
BASELINES = ("random", "infobatch")
SADP_METHODS = ("sadp", "sadp_all", "oracle")
Key = tuple[str, str, str, float]


# -- the main job --------------------------------------------------------------------------


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


# -- merging -------------------------------------------------------------------------------


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


# -- aggregation ---------------------------------------------------------------------------


def aggregate(records: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Mean, standard deviation and count over seeds per (framework, model, method, ratio)."""
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["framework"], r["model"], r["method"], r["prune_ratio"])].append(r)
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


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if np.isnan(mean):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    return text if np.isnan(std) else f"{text} ± {scale * std:.{digits}f}"


def interpolate(points: list[tuple[float, float]], share: float) -> float | None:
    """Accuracy of a baseline at ``share`` (linear between its measured shares), None outside them."""
    points = sorted(points)
    shares = [p[0] for p in points]
    if not points or share < shares[0] - 1e-9 or share > shares[-1] + 1e-9:
        return None
    return float(np.interp(share, shares, [p[1] for p in points]))


def equal_share_rows(summary: dict[Key, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each SADP variant against each baseline at the share the baseline processed at each r.

    The variant's accuracy at that share is read off its own accuracy-vs-share line (its
    measured ratios and the full run, linear in between); None outside that range. Random
    processes exactly what SADP does at the same r, so there the two are measured side by side.
    """
    rows = []
    for framework, model, baseline, ratio in sorted(summary):
        if baseline not in BASELINES:
            continue
        other = summary[(framework, model, baseline, ratio)]
        for method in SADP_METHODS:
            points = [
                (v["processed_fraction"], v["test_accuracy"])
                for (f, m, b, _), v in summary.items()
                if (f, m) == (framework, model) and b in (method, "full")
            ]
            if len(points) < 2:
                continue
            share = other["processed_fraction"]
            rows.append(
                {"framework": framework, "model": model, "method": method, "baseline": baseline,
                 "prune_ratio": ratio, "share": share, "baseline_accuracy": other["test_accuracy"],
                 "baseline_std": other["test_accuracy_std"], "accuracy": interpolate(points, share)}
            )  # fmt: skip
    return rows


# -- plots ---------------------------------------------------------------------------------


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


# -- the report ----------------------------------------------------------------------------


def _configuration(metas: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    lines = []
    for meta in metas:
        machine = meta.get("machine", {})
        versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
        lines += [
            "```console",
            meta.get("command", "?"),
            "```",
            "",
            f"- started {machine.get('date', '?')} on {machine.get('processor', '?')} "
            f"({machine.get('cpus', '?')} CPUs, shared with other jobs), Python {machine.get('python', '?')}",
            f"- versions: {versions}",
            f"- data: {meta.get('dataset', '?')}",
            "",
        ]
    if records:
        r = records[0]
        lines += [
            f"Every run: {r['train_size']} training examples (a fixed random subset), test accuracy on "
            f"{r['test_size']} test examples (the per-epoch curves on the first {r.get('curve_test_size')}); "
            f"{r['epochs']} epochs (warm-up 1 epoch on all data, annealing in the last 12.5% of "
            f"epochs), batch {r['batch_size']}, Adam lr {r['lr']} with a cosine schedule, T = {r['steps']}, "
            f"loss '{r['loss']}', one thread (torch; XLA for JAX). All methods of one (framework, model, "
            "seed) train round-robin one epoch at a time in one process, from the same initial weights; "
            "the timer covers their training steps (planning included, evaluation excluded). The "
            "full-data run goes through `sadp_core.attach(method='full')` (no hooks; the same loop).",
            "",
        ]
        if any(record["framework"] == "jax" for record in records):
            lines += [
                "JAX (`benchmarks/bench_jax.py`): the snnTorch MLP in spyx (a spyx `LIF` with snnTorch "
                "`Leaky` dynamics, the snnTorch MLP's initial weights for the same seed), trained with "
                "`h.value_and_grad` inside an `nnx.jit` step, `h.batches` (short last batch kept) and "
                "`h.update`. Each batch size is compiled the first time it occurs in a run, on a "
                "throwaway copy of the model and optimizer, outside the timer (`jit_warmup_s` in the "
                "records); the timed epoch ends when the parameters are ready and the scores are in "
                "the handle's table. The JAX adapter scores the readout only, so `sadp_all` and the "
                "oracle are torch-only; there is no JAX conv model.",
                "",
            ]
    return lines


def _results_tables(summary: dict[Key, dict[str, Any]]) -> list[str]:
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
                f"{_pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | {delta:+.2f} | "
                f"{v['train_wall_s']:.1f} | {_pm(v['speedup'], v['speedup_std'])} | "
                f"{v['theoretical_speedup']:.2f} | {_pm(v['speedup_over_max'], v['speedup_over_max_std'])} | "
                f"{v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        lines.append("")
    return lines


def _targets(
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


def _probe_tables(probes: dict[str, Any]) -> list[str]:
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
                f"{_pm(v['relative_mse'], v['relative_mse_std'], digits=4)} | {v['relative_bias2']:.4f} | "
                f"{_pm(old['relative_mse'], old['relative_mse_std'], digits=4) if old else '-'} |"
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


def _investigations(directories: list[Path], out: Path) -> list[str]:
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
                f"{v['processed_fraction']:.3f} | {_pm(v['test_accuracy'], v['test_accuracy_std'], 100)} | "
                f"{delta:+.2f} | {v['speedup_cpu'] / v['theoretical_speedup']:.2f} |"
            )
        commands += [f"# {directory.name}", *[m.get("command", "?") for m in metas]]
    return [*lines, "", "```console", *commands, "```", ""]


def write_report(inputs: list[Path], out: Path, markdown: Path) -> None:
    """Merge ``inputs`` into ``out`` (JSON and plots) and write ``markdown``."""
    records, metas, probes = merge(inputs)
    if not records:
        raise SystemExit(f"error: no results.json with records in {', '.join(map(str, inputs))}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    (out / "meta.json").write_text(json.dumps(metas, indent=1))
    if probes["variance"] or probes["bound"]:
        (out / "probes.json").write_text(json.dumps(probes, indent=1))
    summary = aggregate(records)
    rows = equal_share_rows(summary)
    plot_accuracy_vs_time(records, out / "accuracy_vs_time.png")
    plot_accuracy_vs_share(summary, out / "accuracy_vs_share.png")
    images = Path(os.path.relpath(out.resolve(), markdown.parent.resolve()))
    investigations = sorted(p.parent for p in (out / "investigations").glob("*/results.json"))
    side = {directory.name: aggregate(merge([directory])[0]) for directory in investigations}
    notes = out / "notes.txt"
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python benchmarks/sadp_bench.py report`; do not edit by hand. "
        "The analysis comes from docs/benchmarks/notes.txt. -->",
        "",
        "Every pruning method side by side on real spiking networks (snnTorch `Leaky`, SpikingJelly "
        "`LIFNode`, spyx `LIF` in JAX), trained through `sadp_core.attach`. The figures below are "
        "computed from `docs/benchmarks/results.json` (one record per run) and "
        "`docs/benchmarks/probes.json`.",
        "",
        "## How it was run",
        "",
        *_configuration(metas, records),
        "Regenerate this page from the JSON with "
        "`python benchmarks/sadp_bench.py report --inputs docs/benchmarks`.",
        "",
        "## Targets",
        "",
        *_targets(summary, rows, probes, side),
        "## Results",
        "",
        "Mean ± standard deviation over seeds. *share processed*: examples trained / (epochs x N); "
        "*speedup*: wall time of the full-data run of the same framework, model and seed divided "
        "by this run's; *max speedup*: 1 / share; *achieved/max*: their ratio.",
        "",
        *_results_tables(summary),
        f"![accuracy against share processed]({images / 'accuracy_vs_share.png'})",
        "",
        f"![accuracy against wall time]({images / 'accuracy_vs_time.png'})",
        "",
        "## Equal examples processed",
        "",
        "InfoBatch keeps every example above the mean loss, so at the same nominal r it trains on "
        "more examples than the others. Each row compares a baseline run (at its r) with a SADP "
        "variant at the same share of examples processed: the variant's accuracy is read off its "
        "accuracy-vs-share line (its three ratios and the full run, linear in between). Against "
        "random the shares are equal at the same r, so both are measured. Gap = SADP variant minus "
        "baseline, in points; the baselines' standard deviation over seeds is given for scale.",
        "",
        "| framework, model | baseline | r | share | baseline accuracy (%) | method "
        "| method at that share (%) | gap (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mine = row["accuracy"]
        at_share = "n/a" if mine is None else f"{100 * mine:.2f}"
        gap = "n/a" if mine is None else f"{100 * (mine - row['baseline_accuracy']):+.2f}"
        lines.append(
            f"| {row['framework']}, {row['model']} | {row['baseline']} | {row['prune_ratio']:g} | "
            f"{row['share']:.3f} | {_pm(row['baseline_accuracy'], row['baseline_std'], 100)} | "
            f"{row['method']} | {at_share} | {gap} |"
        )
    lines += ["", "## Gradient variance and bound quality", ""]
    if probes["meta"]:
        lines += ["```console", *[m.get("command", "?") for m in probes["meta"]], "```", ""]
    lines += _probe_tables(probes)
    lines += _investigations(investigations, out)
    if notes.exists():
        lines += ["## Analysis", "", notes.read_text().strip(), ""]
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines).rstrip() + "\n")

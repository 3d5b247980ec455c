"""``docs/benchmarks.md`` from the benchmark's JSON (``sadp-bench report``).

Everything in the report is computed from ``results.json`` (one record per run),
``probes.json`` and ``meta.json``; the hand-written analysis comes from
``notes.txt`` beside them, included verbatim. Regenerate rather than edit::

    sadp-bench report --inputs docs/benchmarks

This module writes the page; the numbers come from :mod:`.summary`, the tables from
:mod:`.tables`, the figures from :mod:`.plots`. The report never imports torch or JAX.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .plots import plot_accuracy_vs_share, plot_accuracy_vs_time
from .savings import convergence, paired_points, savings_table
from .summary import BASELINES, METHOD_ORDER, Key, aggregate, equal_share_rows, merge, settings_of
from .tables import investigation_tables, pm, probe_tables, results_tables, targets


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
            f"Every run: {r['train_size']} training examples, test accuracy on "
            f"{r['test_size']} test examples (the per-epoch curves on the first {r.get('curve_test_size')}); "
            f"the epochs of its setting ({', '.join(sorted({str(x['epochs']) for x in records}, key=int))}; "
            "warm-up 1 epoch on all data, annealing in the last 12.5% of "
            f"epochs), batch {r['batch_size']}, Adam lr {r['lr']} with a cosine schedule, T = {r['steps']}, "
            f"loss '{r['loss']}', one thread (torch; XLA for JAX). All methods of one (framework, model, "
            "seed) train round-robin one epoch at a time in one process, from the same initial weights; "
            "the timer covers their training steps (planning included, evaluation excluded). The "
            "full-data run goes through `sadp_core.attach(method='full')` (no hooks; the same loop).",
            "",
        ]
        if any(record["framework"] == "jax" for record in records):
            lines += [
                "JAX (`sadp_bench/train/jax.py`): the snnTorch MLP and conv net in spyx (a spyx `LIF` with "
                "snnTorch `Leaky` dynamics, the snnTorch model's initial weights for the same seed), trained"
                " with `h.value_and_grad` inside an `nnx.jit` step, `h.batches` (short last batch kept) and "
                "`h.update`. Each batch size is compiled the first time it occurs in a run, on a throwaway "
                "copy of the model and optimizer, outside the timer (`jit_warmup_s` in the records); the "
                "timed epoch ends when the parameters are ready and the scores are in the handle's table. "
                '`sadp_all` and the oracle use the JAX adapter\'s `scope="all"` (runs recorded before it '
                "existed have none).",
                "",
            ]
    return lines


def _convergence_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = convergence(records)
    if not rows:
        return []
    lines = [
        "Has full data converged? Its test accuracy (every epoch, the curve test set) gained this much "
        "over the last quarter of its epochs; the issue's converged regime asks for under 0.1 point.",
        "",
        "| setting | seed | gain over epochs from -> last (points) |",
        "|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["setting"], r["seed"])):
        f, m, e = row["setting"]
        lines.append(
            f"| {f}, {m}, {e} epochs | {row['seed']} | "
            f"{100 * row['gain']:+.2f} ({row['from_epoch']} -> {row['epochs']}) |"
        )
    return [*lines, ""]


def defaults_and_rows(
    summary: dict[Key, dict[str, Any]],
) -> tuple[dict[tuple[str, str, int], str], list[dict[str, Any]]]:
    """Per setting, the default it is judged by (``sadp`` where the grid ran it, else the old
    default ``sadp_smooth05``), and the equal-share rows of that default against each baseline."""
    ran_default = {key[:3] for key in summary if key[3] == "sadp"}
    defaults = {s: "sadp" if s in ran_default else "sadp_smooth05" for s in settings_of(summary)}
    rows = [
        row for row in equal_share_rows(summary, ("sadp", "sadp_smooth05"))
        if defaults[(row["framework"], row["model"], row["epochs"])] == row["method"]
    ]  # fmt: skip
    return defaults, rows


def targets_of_defaults(
    summary: dict[Key, dict[str, Any]],
    rows: list[dict[str, Any]],
    points: dict[tuple[Any, ...], list[dict[str, Any]]],
    defaults: dict[tuple[str, str, int], str],
) -> list[str]:
    """The targets table of each setting's default (``sadp``, or ``sadp_smooth05`` in the settings
    that ran before the default changed), one table."""
    lines: list[str] = []
    for method in sorted(set(defaults.values())):
        mine = {key: value for key, value in summary.items() if defaults[key[:3]] == method}
        table = targets(mine, rows, points, method)  # a header, rows, a blank line
        lines = table if not lines else [*lines[:-1], *table[2:]]
    return lines


def side_by_side_lines(directories: list[Path]) -> list[str]:
    """Time to accuracy and targets of SADP's default in each investigation that ran it beside
    full data and every baseline (:data:`~.summary.BASELINES`), against that directory's own
    full-data runs: a grid run again for the default after the main grid's default changed."""
    lines: list[str] = []
    for directory in directories:
        records, _, _ = merge([directory])
        methods = {record["method"] for record in records}
        if not {"full", "sadp", *BASELINES} <= methods:
            continue
        summary = aggregate(records)
        lines += [
            f"### The default beside every baseline: `investigations/{directory.name}`",
            "",
            *savings_table(records, METHOD_ORDER),
            *targets(summary, equal_share_rows(summary, ("sadp",)), paired_points(records), "sadp"),
        ]
    return lines


def _equal_share_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Each baseline run (at its r) against SADP's default at the same share of examples processed: "
        "SADP's accuracy is read off its accuracy-vs-share line (its three ratios and the full run, linear "
        "in between; n/a outside). Gap = SADP minus baseline, in points; the baseline's standard deviation "
        "over seeds is given for scale.",
        "",
        "| setting | baseline | r | share | baseline accuracy (%) | SADP at that share (%) | gap (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mine = row["accuracy"]
        at_share = "n/a" if mine is None else f"{100 * mine:.2f}"
        gap = "n/a" if mine is None else f"{100 * (mine - row['baseline_accuracy']):+.2f}"
        lines.append(
            f"| {row['framework']}, {row['model']}, {row['epochs']} epochs | {row['baseline']} | "
            f"{row['prune_ratio']:g} | {row['share']:.3f} | "
            f"{pm(row['baseline_accuracy'], row['baseline_std'], 100)} | "
            f"{at_share} | {gap} |"
        )
    return [*lines, ""]


GPU_SECTION = ("<!-- gpu-check: begin -->", "<!-- gpu-check: end -->")
"""The markers of the section that ``ci/gpu_report.py markdown --into`` writes: kept as it is."""


def kept_gpu_section(page: str) -> list[str]:
    """The lines of the GPU check's section of an earlier page, markers included ([] if none)."""
    begin, end = GPU_SECTION
    if begin not in page or end not in page.split(begin, 1)[1]:
        return []
    body = page.split(begin, 1)[1].split(end, 1)[0]
    return ["", begin + body + end]


def write_report(inputs: list[Path], out: Path, markdown: Path) -> None:
    """Merge ``inputs`` into ``out`` (JSON and plots) and write ``markdown``, keeping the GPU
    check's section of the page it replaces (:func:`kept_gpu_section`)."""
    records, metas, probes = merge(inputs)
    if not records:
        raise SystemExit(f"error: no results.json with records in {', '.join(map(str, inputs))}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    (out / "meta.json").write_text(json.dumps(metas, indent=1))
    if probes["variance"] or probes["bound"]:
        (out / "probes.json").write_text(json.dumps(probes, indent=1))
    summary = aggregate(records)
    defaults, rows = defaults_and_rows(summary)
    points = paired_points(records)
    plot_accuracy_vs_time(summary, out / "accuracy_vs_time.png")
    plot_accuracy_vs_share(summary, out / "accuracy_vs_share.png")
    images = Path(os.path.relpath(out.resolve(), markdown.parent.resolve()))
    investigations = sorted(p.parent for p in (out / "investigations").glob("*/results.json"))
    notes = out / "notes.txt"
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `sadp-bench report`; do not edit by hand. "
        "The analysis comes from docs/benchmarks/notes.txt. -->",
        "",
        "Every pruning method side by side on real spiking networks (snnTorch `Leaky`, SpikingJelly "
        "`LIFNode`, spyx `LIF` in JAX), trained through `sadp_core.attach`, against full data and "
        "against full data for fewer epochs. Every figure below is computed from "
        "`docs/benchmarks/results.json` (one record per run).",
        "",
    ]
    if notes.exists():
        lines += ["## Analysis", "", notes.read_text().strip(), ""]
    lines += [
        "## Time to accuracy",
        "",
        "Lossless saving = 1 - the smallest share of full-data wall time at which the method's final "
        "accuracy, paired by seed with full data, stays within 0.1 point of it (that point and every "
        "dearer measured point of the method; measured points only, no interpolation). In brackets: the "
        "ratio that gives it, the accuracy change (points, ± standard error over seeds), and the saving "
        "in CPU time and in examples at that point. 0%: no measured ratio is lossless.",
        "",
        *savings_table(records, METHOD_ORDER),
        f"![accuracy against wall time]({images / 'accuracy_vs_time.png'})",
        "",
        f"![accuracy against share processed]({images / 'accuracy_vs_share.png'})",
        "",
        "## Targets",
        "",
        *targets_of_defaults(summary, rows, points, defaults),
        *side_by_side_lines(investigations),
        "## How it was run",
        "",
        *_configuration(metas, records),
        "Regenerate this page from the JSON with `sadp-bench report --inputs docs/benchmarks`.",
        "",
        *_convergence_lines(records),
        "## Results",
        "",
        "Mean ± standard deviation over seeds; Δ is paired by seed with the full-data run (mean ± "
        "standard error). *share processed*: examples trained / (epochs x N), where epochs are the "
        "comparison's (fewer_epochs trains fewer of its own); *speedup*: wall time of the full-data run "
        "of the same setting and seed divided by this run's; *max speedup*: 1 / share; *achieved/max*: "
        "their ratio.",
        "",
        *results_tables(summary, points),
        "## Equal examples processed",
        "",
        *_equal_share_lines(rows),
        "## Gradient variance and bound quality",
        "",
    ]
    if probes["meta"]:
        lines += ["```console", *[m.get("command", "?") for m in probes["meta"]], "```", ""]
    lines += probe_tables(probes)
    lines += investigation_tables(investigations, out)
    if markdown.exists():
        lines += kept_gpu_section(markdown.read_text())
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines).rstrip() + "\n")

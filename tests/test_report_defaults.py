"""The report's choice of SADP's default per setting, and its side-by-side section.

On synthetic records (no framework needed): a setting whose grid ran the default (``sadp``)
is judged by it; a setting that ran before the default changed, by ``sadp_smooth05``; an
investigation that ran the default beside every baseline gets its own time-to-accuracy and
targets tables, one that did not gets none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadp_bench.report.page import defaults_and_rows, side_by_side_lines, targets_of_defaults
from sadp_bench.report.savings import paired_points
from sadp_bench.report.summary import BASELINES, aggregate, equal_share_rows


def record(framework: str, method: str, ratio: float, seed: int, accuracy: float) -> dict[str, Any]:
    share = 1.0 if method == "full" else 1.0 - ratio
    return {
        "framework": framework, "model": "mlp", "epochs": 8, "method": method, "prune_ratio": ratio,
        "seed": seed, "test_accuracy": accuracy, "processed_fraction": share, "train_wall_s": 100.0 * share,
        "train_cpu_s": 100.0 * share, "speedup": 1 / share, "speedup_cpu": 1 / share,
        "theoretical_speedup": 1 / share, "speedup_over_max": 1.0,
    }  # fmt: skip


def grid(framework: str, sadp_name: str, methods: tuple[str, ...] = BASELINES) -> list[dict[str, Any]]:
    records = []
    for seed in (0, 1):
        records.append(record(framework, "full", 0.0, seed, 0.90))
        for ratio in (0.3, 0.5):
            for method in (*methods, sadp_name):
                records.append(record(framework, method, ratio, seed, 0.90 - 0.01 * ratio + 0.0001 * seed))
    return records


def test_each_setting_is_judged_by_its_own_default() -> None:
    records = grid("jax", "sadp_smooth05") + grid("snntorch", "sadp")
    summary = aggregate(records)
    defaults, rows = defaults_and_rows(summary)
    assert defaults == {("jax", "mlp", 8): "sadp_smooth05", ("snntorch", "mlp", 8): "sadp"}
    assert {(row["framework"], row["method"]) for row in rows} == {
        ("jax", "sadp_smooth05"),
        ("snntorch", "sadp"),
    }
    lines = targets_of_defaults(summary, rows, paired_points(records), defaults)
    assert lines[0].startswith("| target |") and sum(line.startswith("| target |") for line in lines) == 1
    assert "" not in lines[:-1] and lines[-1] == ""  # one Markdown table
    judged = {
        (line.split("|")[2].strip(), line.split("|")[1].split()[0].removesuffix("'s"))
        for line in lines[2:]
        if line
    }
    assert judged == {("jax, mlp, 8 epochs", "sadp_smooth05"), ("snntorch, mlp, 8 epochs", "sadp")}
    assert any("sadp_smooth05's lossless saving >= 35% | jax" in line for line in lines)


def test_side_by_side_section_only_where_every_baseline_ran(tmp_path: Path) -> None:
    complete, partial = tmp_path / "complete", tmp_path / "partial"
    for directory, records in ((complete, grid("jax", "sadp")), (partial, grid("jax", "sadp", ("random",)))):
        directory.mkdir()
        (directory / "results.json").write_text(json.dumps(records))
    lines = side_by_side_lines([complete, partial])
    assert [line for line in lines if line.startswith("###")] == [
        "### The default beside every baseline: `investigations/complete`"
    ]
    assert any(line.startswith("| sadp | ") for line in lines)
    assert any(
        line.startswith("| sadp's lossless saving the largest | jax, mlp, 8 epochs |") for line in lines
    )


def test_no_largest_saving_is_claimed_where_no_method_is_lossless() -> None:
    records = [r for r in grid("jax", "sadp") if r["method"] == "full" or r["prune_ratio"] == 0.5]
    for r in records:  # every pruned run 1 point below full data: nothing is lossless
        r["test_accuracy"] = 0.90 if r["method"] == "full" else 0.89
    summary = aggregate(records)
    lines = targets_of_defaults(
        summary, equal_share_rows(summary, ("sadp",)), paired_points(records), {("jax", "mlp", 8): "sadp"}
    )
    row = "| sadp's lossless saving the largest | jax, mlp, 8 epochs | no method is lossless | n/a |"
    assert row in lines

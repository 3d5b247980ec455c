"""Smoke test of the SNN benchmark CLI (``benchmarks/sadp_bench.py``) on scikit-learn's digits.

End to end, as a user runs it: every method on the snnTorch and SpikingJelly MLPs, SADP's
two scopes on their conv nets, the JAX MLP (spyx, every method) and SADP's two scopes on the
JAX conv net, one seed,
two epochs (a warm-up epoch and one pruned epoch, so that each method's selection runs) in
batches of 512 (few steps: this checks the plumbing, not the learning), then the report;
checks the records' fields and that the plots exist. Collected where snnTorch, SpikingJelly and JAX are all
under test (``nox -s bench_cli``). Benchmark figures themselves are not asserted: they are
measured, not tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "benchmarks" / "sadp_bench.py"
METHODS = (
    "full", "fewer_epochs", "random", "infobatch", "seta", "ucb", "eps_greedy", "loss", "sadp",
    "sadp_smooth05", "sadp_unbiased", "sadp_uncorrected", "sadp_all", "oracle",
)  # fmt: skip
JAX_METHODS = set(METHODS)  # scope="all" in JAX: sadp_all and the oracle run there too
FIELDS = (
    "framework", "model", "method", "prune_ratio", "seed", "test_accuracy", "train_wall_s",
    "processed_fraction", "theoretical_speedup", "speedup", "curve",
)  # fmt: skip


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    done = cli(
        "run", "--dataset", "digits", "--epochs", "2", "--seeds", "0", "--ratios", "0.5",
        "--methods", "all", "--conv-methods", "sadp,sadp_all", "--batch-size", "512",
        "--out", str(out / "run"), cwd=out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_run_writes_one_record_per_run_with_every_field(grid: Path) -> None:
    records = json.loads((grid / "run" / "results.json").read_text())
    assert isinstance(records, list)
    runs = {(r["framework"], r["model"], r["method"]) for r in records}
    for framework in ("snntorch", "spikingjelly"):
        assert {m for f, model, m in runs if (f, model) == (framework, "mlp")} == set(METHODS)
        conv = {m for f, model, m in runs if (f, model) == (framework, "conv")}
        assert conv == {"full", "sadp", "sadp_all"}
    jax_runs = {(model, m) for f, model, m in runs if f == "jax"}
    assert jax_runs == {("mlp", m) for m in JAX_METHODS} | {("conv", m) for m in ("full", "sadp", "sadp_all")}
    for record in records:
        assert all(field in record for field in FIELDS), sorted(record)
        assert 0 <= record["test_accuracy"] <= 1
        assert record["train_wall_s"] > 0 and record["speedup"] > 0
        pruned = record["method"] != "full"
        assert record["prune_ratio"] == (0.5 if pruned else 0.0)
        if record["method"] == "fewer_epochs":  # all data for round(0.5 * 2) = 1 of the 2 epochs
            assert record["run_epochs"] == 1 and len(record["curve"]) == 1
            assert record["processed_fraction"] == pytest.approx(0.5)
        elif record["method"] in ("full", "infobatch"):
            assert len(record["curve"]) == 2
            assert record["processed_fraction"] >= 0.75 - 1e-9
        else:  # a warm-up epoch on all 1437 examples, then K = round(0.5 * 1437)
            assert len(record["curve"]) == 2
            assert record["processed_fraction"] == pytest.approx((1437 + 718) / (2 * 1437))
        assert record["theoretical_speedup"] == pytest.approx(1 / record["processed_fraction"])
        if record["framework"] == "jax":  # one compilation per batch size, none from step to step
            sizes = {size for p in record["curve"] for size in (min(p["examples"], 512), p["examples"] % 512)}
            assert record["jit_compilations"] == len(sizes - {0}) and record["jit_warmup_s"] > 0
    meta = json.loads((grid / "run" / "meta.json").read_text())
    assert meta["machine"]["versions"]["torch"]


def test_report_writes_markdown_json_and_plots(grid: Path) -> None:
    done = cli(
        "report", "--inputs", str(grid / "run"), "--out", str(grid / "report"),
        "--markdown", str(grid / "report.md"), cwd=grid,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("accuracy_vs_time.png", "accuracy_vs_share.png"):
        assert (grid / "report" / name).stat().st_size > 1000
    assert (
        len(json.loads((grid / "report" / "results.json").read_text())) == 2 * (14 + 3) + len(JAX_METHODS) + 3
    )
    text = (grid / "report.md").read_text()
    assert "## Targets" in text and "| sadp_all | 0.5 |" in text and "### jax, mlp, 2 epochs" in text
    assert "### jax, conv, 2 epochs" in text
    assert "## Time to accuracy" in text and "| fewer_epochs |" in text


def test_ablation_prints_the_paired_delta_of_every_method(grid: Path) -> None:
    done = cli("ablation", "--inputs", str(grid / "run"), cwd=grid)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads((grid / "run" / "results.json").read_text())
    full = {(r["framework"], r["model"]): r["test_accuracy"] for r in records if r["method"] == "full"}
    sadp = next(r for r in records if (r["framework"], r["model"], r["method"]) == ("jax", "mlp", "sadp"))
    delta = 100 * (sadp["test_accuracy"] - full[("jax", "mlp")])
    header, _, *rows = done.stdout.strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.strip("|").split("|")] for row in rows}
    assert "full" not in cells and set(cells) == set(METHODS) - {"full"}
    assert cells["sadp"][columns.index("jax mlp 2 ep., r = 0.5")] == f"{delta:.2f} (1)"


def test_main_job_on_digits_writes_json_and_plot(tmp_path: Path) -> None:
    done = cli("main", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path / "main"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "main" / "results.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["full", "sadp", "fewer_epochs"]
    fewer = result["runs"][2]  # all data for the whole epochs closest to SADP's share (2 epochs: 1)
    assert fewer["run_epochs"] == 1 and fewer["processed_fraction"] == pytest.approx(0.5)
    assert "achieved/max" in done.stdout
    assert (tmp_path / "main" / "accuracy_vs_time.png").stat().st_size > 1000
    assert {r["device"] for r in result["runs"]} == {"cpu"}


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    done = cli("run", "--methods", "sadp,nope", cwd=tmp_path)
    assert done.returncode == 2 and "unknown method 'nope'" in done.stderr
    done = cli("main", "--data", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in done.stderr and "--dataset digits" in done.stderr
    done = cli("main", "--dataset", "digits", "--device", "nonsense", cwd=tmp_path)
    assert done.returncode == 2 and "is not a torch device" in done.stderr

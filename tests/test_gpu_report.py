"""``ci/gpu_report.py``: the pieces of the GPU check become one checked JSON report and a
Markdown section that ``sadp-bench report`` keeps (no framework needed: runs in every session)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "ci" / "gpu_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gr = _load()

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10" time="1.0">
</testsuite></testsuites>"""


def _run(method: str, **extra: Any) -> dict[str, Any]:
    return {"method": method, "prune_ratio": 0.3 if method == "sadp" else 0.0, "test_accuracy": 0.85,
            "train_wall_s": 12.5, "processed_fraction": 0.775, "speedup": 1.2, "theoretical_speedup": 1.29,
            "speedup_over_max": 0.93, "run_epochs": 8, "epochs": 8, "curve": [], **extra}  # fmt: skip


def work_folder(tmp_path: Path) -> Path:
    """What a run of ci/gpu-check leaves behind, small."""
    work = tmp_path / "work"
    work.mkdir()
    stages = ["env\t0\t3", "tests_gpu\t0\t40", "overhead_torch\t0\t30", "overhead_jax\t124\t90",
              "main_snntorch\t0\t80", "tests_core_torch\t1\t50", "tests_core_jax\tskipped\t0"]  # fmt: skip
    (work / "stages.tsv").write_text("\n".join(stages) + "\n")
    env = {"device": {"name": "NVIDIA H100 80GB HBM3", "driver": "580.1", "source": "nvidia-smi"},
           "versions": {"torch": "2.11.0", "python": "3.12.3"}, "seen": {}}  # fmt: skip
    (work / "env.json").write_text(json.dumps(env))
    (work / "tests-gpu.xml").write_text(JUNIT)
    (work / "tests-core-torch.xml").write_text(JUNIT)
    rows = [{"network": "snntorch-hoisted", "plain_ms": 2.0, "attached_ms": 2.1, "ratio": 1.05}]
    (work / "overhead-torch.json").write_text(json.dumps({"device": "cuda", "rows": rows}))
    (work / "main-snntorch").mkdir()
    runs = [_run("full", cuda_syncs=[8, 8], cuda_sync_steps=[7, 7]), _run("sadp")]
    (work / "main-snntorch" / "results.json").write_text(json.dumps({"runs": runs}))
    return work


def test_stages_are_read_with_their_status(tmp_path: Path) -> None:
    stages = gr.read_stages(work_folder(tmp_path) / "stages.tsv")
    assert stages["env"] == {"exit_code": 0, "status": "ok", "seconds": 3.0}
    assert stages["overhead_jax"]["status"] == "timed out"
    assert stages["tests_core_torch"]["status"] == "failed"
    assert stages["tests_core_jax"] == {"exit_code": None, "status": "skipped", "seconds": 0.0}
    assert gr.stage_status(5) == "no tests"


@pytest.mark.parametrize("line", ["env\t0", "env\tzero\t3", "env\t0\tlong"])
def test_a_bad_stage_line_is_named(tmp_path: Path, line: str) -> None:
    path = tmp_path / "stages.tsv"
    path.write_text(line + "\n")
    with pytest.raises(gr.ReportError, match=r"stages.tsv:1"):
        gr.read_stages(path)
    with pytest.raises(gr.ReportError, match=r"missing"):
        gr.read_stages(tmp_path / "nothing.tsv")


def test_pytest_counts_come_from_junit_xml(tmp_path: Path) -> None:
    path = tmp_path / "t.xml"
    path.write_text(JUNIT)
    assert gr.pytest_counts(path) == {"passed": 4, "failed": 3, "errors": 1, "skipped": 3}
    path.write_text(JUNIT.replace("<testsuites>", "").replace("</testsuites>", ""))  # one bare suite
    assert gr.pytest_counts(path)["passed"] == 4
    path.write_text("<testsuites><testsuite tests='x'/></testsuites>")
    with pytest.raises(gr.ReportError, match=r"not a count"):
        gr.pytest_counts(path)
    path.write_text("not xml")
    with pytest.raises(gr.ReportError, match=r"not JUnit XML"):
        gr.pytest_counts(path)
    with pytest.raises(gr.ReportError, match=r"did not finish"):
        gr.pytest_counts(tmp_path / "absent.xml")


def test_assemble_gives_a_valid_report_that_says_what_is_missing(tmp_path: Path) -> None:
    report = gr.assemble(work_folder(tmp_path))
    assert gr.validate(report) == []
    assert report["device"]["name"] == "NVIDIA H100 80GB HBM3"
    assert report["overhead_snntorch_hoisted"] == pytest.approx(1.05)
    assert not any(key.startswith("overhead_jax") for key in report)  # timed out: left out, not made up
    assert report["sessions"]["tests_gpu"]["passed"] == 4
    assert report["sessions"]["tests_core_jax"]["status"] == "skipped"
    assert report["sessions"]["tests_core_jax"]["passed"] == 0
    assert report["main"]["snntorch"][0]["cuda_syncs"] == [8, 8]
    assert "curve" not in report["main"]["snntorch"][0]
    json.dumps(report)  # plain JSON


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.pop("device"), "'device' is missing"),
        (lambda r: r["sessions"].pop("tests_gpu"), "session 'tests_gpu' is missing"),
        (lambda r: r["sessions"]["tests_gpu"].update(failed=True), "'failed' is not a count"),
        (lambda r: r.update(overhead_x=-1.0), "'overhead_x' is not a positive ratio"),
        (lambda r: r.update(overhead_x="1.0"), "'overhead_x' is not a positive ratio"),
        (lambda r: r.update(schema=99), "schema 99"),
    ],
)
def test_validate_names_each_problem(tmp_path: Path, change: Any, problem: str) -> None:
    report = gr.assemble(work_folder(tmp_path))
    change(report)
    assert any(problem in found for found in gr.validate(report))
    assert gr.validate([]) == ["the report is a list, not an object"]


def test_markdown_section_and_its_place_in_the_page(tmp_path: Path) -> None:
    section = gr.markdown(gr.assemble(work_folder(tmp_path)))
    assert section.startswith(gr.BEGIN) and section.rstrip().endswith(gr.END)
    assert "NVIDIA H100 80GB HBM3 (nvidia-smi, driver 580.1)" in section
    assert "| snntorch_hoisted | 2.00 | 2.10 | 1.050 |" in section
    assert "| all data, 8 epochs | 85.00% | 12.5 | 0.775 | 1.20x | 1.29x | 8.0 | 7.0 |" in section
    assert "| sadp r=0.30 |" in section
    assert "overhead_jax (timed out)" in section and "tests_core_jax (skipped)" in section
    page = "# Benchmarks\n\ntext\n"
    once = gr.insert_section(page, section)
    assert once.startswith(page.rstrip("\n")) and once.count(gr.BEGIN) == 1
    again = gr.insert_section(once + "after\n", section.replace("one run", "another run"))
    assert again.count(gr.BEGIN) == 1 and "another run" in again and again.endswith("after\n")
    with pytest.raises(gr.ReportError, match=r"only one of the markers"):
        gr.insert_section(page + gr.BEGIN, section)


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, out = work_folder(tmp_path), tmp_path / "out" / "gpu.json"
    assert gr.main(["assemble", "--work", str(work), "--out", str(out)]) == 0
    assert gr.main(["validate", str(out)]) == 0
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    assert gr.main(["markdown", str(out), "--into", str(page)]) == 0
    assert gr.BEGIN in page.read_text()
    assert gr.main(["validate", str(tmp_path / "absent.json")]) == 2
    out.write_text(json.dumps({"schema": 1}))
    assert gr.main(["markdown", str(out)]) == 1
    assert "is missing" in capsys.readouterr().err


def test_the_benchmark_report_keeps_the_section() -> None:
    """``sadp-bench report`` rewrites docs/benchmarks.md; the GPU check's section stays."""
    from sadp_bench.report.page import GPU_SECTION, kept_gpu_section

    assert (gr.BEGIN, gr.END) == GPU_SECTION
    page = gr.insert_section(
        "# Benchmarks\n", "<!-- gpu-check: begin -->\n## On a GPU\n<!-- gpu-check: end -->\n"
    )
    assert kept_gpu_section(page) == ["", "<!-- gpu-check: begin -->\n## On a GPU\n<!-- gpu-check: end -->"]
    assert kept_gpu_section("# Benchmarks\n") == []
    assert kept_gpu_section(gr.BEGIN + " no end") == []

"""``bash ci/gpu-check --dry-run``: the GPU check end to end on the CPU, at small sizes, with
the packages of this environment (the session must have snnTorch, SpikingJelly and JAX with
spyx: ``conftest.MULTI_FRAMEWORK_TESTS``). What a GPU run writes is what this checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout"
)


def run_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"),
                 "OUT": str(tmp_path / "out"), **env}  # fmt: skip
    return subprocess.run(
        ["bash", str(ROOT / "ci" / "gpu-check"), *args], env=variables, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="needs Fashion-MNIST (dataset-fashion-mnist)")
def test_the_dry_run_writes_a_valid_report(tmp_path: Path) -> None:
    done = run_check(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "gpu.json").read_text())
    sys.path.insert(0, str(ROOT / "ci"))
    try:
        import gpu_report
    finally:
        sys.path.remove(str(ROOT / "ci"))
    assert gpu_report.validate(report) == []
    assert report["dry_run"] is True and report["versions"]["python"]
    assert set(report["sessions"]) == {"tests_gpu", "tests_core_torch", "tests_core_jax"}
    assert report["sessions"]["tests_gpu"]["status"] == "no tests"  # no CUDA: deselected
    assert report["sessions"]["tests_core_torch"]["passed"] > 0
    assert report["sessions"]["tests_core_jax"]["failed"] == 0
    ratios = {key for key in report if key.startswith("overhead")}
    assert ratios == {"overhead_snntorch", "overhead_snntorch_hoisted", "overhead_spikingjelly",
                      "overhead_jax_bound"}  # fmt: skip
    assert set(report["main"]) == {"snntorch", "spikingjelly", "jax"}
    for runs in report["main"].values():
        assert [run["method"] for run in runs] == ["full", "sadp", "fewer_epochs"]
        assert all(run["theoretical_speedup"] >= 1 and run["speedup"] > 0 for run in runs)
    assert all(stage["status"] in ("ok", "no tests") for stage in report["stages"].values())
    log = (out / "gpu-check.log").read_text()
    assert "== main_jax: exit 0" in log and gpu_report.BEGIN in done.stdout
    with tarfile.open(out / "gpu-work.tar.gz") as archive:
        names = archive.getnames()
    assert "./main-snntorch/results.json" in names and not any("site" in name for name in names)


def test_a_rerun_runs_only_the_stages_named(tmp_path: Path) -> None:
    done = run_check(tmp_path, "--dry-run", GPU_CHECK_ONLY="overhead_torch")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert set(report["stages"]) == {"env", "overhead_torch"}
    assert report["sessions"]["tests_gpu"]["status"] == "not run" and report["main"] == {}
    assert report["overhead_snntorch"] > 0


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    done = run_check(tmp_path, "--wrong")
    assert done.returncode == 2 and "usage: bash ci/gpu-check [--dry-run]" in done.stderr
    done = run_check(tmp_path, "--dry-run", GPU_CHECK_EPOCHS="one")
    assert done.returncode == 2 and "GPU_CHECK_EPOCHS" in done.stderr
    done = run_check(tmp_path, "--dry-run", GPU_CHECK_ONLY="main_torch")
    assert done.returncode == 2 and "the stages are" in done.stderr
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "x").write_text("")
    done = run_check(tmp_path, "--dry-run")
    assert done.returncode == 2 and "is not empty" in done.stderr

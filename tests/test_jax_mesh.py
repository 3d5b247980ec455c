"""Data-parallel JAX training with the SADP handle: a two-device mesh against one device.

XLA fixes the number of CPU devices when jax is imported, so each test runs
``tests/jax_mesh_worker.py`` in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and ``JAX_PLATFORMS=cpu``. The
worker trains a model on scikit-learn's digits for three epochs (warm-up, two pruned
epochs) inside an ``nnx.jit`` step with an Adam optimizer, once on one device and once with
x, y and w sharded along the ``"data"`` axis of a two-device mesh (model and optimizer
state replicated), and writes both runs to an npz file.

In float64 the two runs agree to the last bit on the digits, so their scores, score tables
and plans are compared exactly (rtol 1e-5 on scores). In float32 the sharded gradient sum
rounds differently from the single-device one; a spiking threshold turns such a rounding
difference, once it flips a spike, into a different trajectory within an epoch, so the
float32 run is compared where both runs start from the same parameters: the first step.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

WORKER = Path(__file__).with_name("jax_mesh_worker.py")
NEEDS = ("jax", "flax", "spyx", "optax", "sklearn")


def _require_frameworks() -> None:
    """A session that lists jax in SADP_FRAMEWORKS needs these installed; elsewhere, skip."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing and "jax" in os.environ.get("SADP_FRAMEWORKS", "").split(","):
        raise ImportError(f"the jax session needs {missing} installed")
    for name in missing:
        pytest.importorskip(name)


_require_frameworks()


def two_devices(*args: str) -> str:
    """Run ``python *args`` on two forced CPU devices; its standard output."""
    env = {key: value for key, value in os.environ.items() if key not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    env |= {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    # run from tests/: from the repository root, `python -c` would import the source tree's
    # sadp_core, which lacks sadp_core.adapters (installed from adapters/)
    done = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, f"python {args[0]} failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    return done.stdout


def run_worker(out: Path, dtype: str, *cases: str) -> dict[str, Any]:
    """Run the worker on two forced CPU devices; the npz results of each case by name."""
    two_devices(str(WORKER), str(out), "--dtype", dtype, *cases)
    return {case: dict(np.load(out / f"{case}.npz")) for case in cases}


@pytest.fixture(scope="module")
def float64_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A spyx model on a mesh of ``Auto`` axes and an NNX model on ``Explicit`` axes."""
    return run_worker(tmp_path_factory.mktemp("mesh64"), "float64", "spyx-auto", "nnx-explicit")


def check_sharding(run: dict[str, Any], rows: int) -> None:
    """The mesh had two devices, x was split over both, scores came back split as the batch."""
    assert int(run["mesh_size"]) == 2
    assert int(run["mesh_seen_x_devices"]) == 2
    assert run["mesh_seen_x_shard_rows"].tolist() == [rows, rows]
    assert str(run["mesh_seen_scores_spec"]) == "P('data',)"
    assert int(run["mesh_seen_scores_devices"]) == 2
    assert bool(run["mesh_seen_kernel_replicated"])


def check_one_compilation(run: dict[str, Any]) -> None:
    """Every batch has one size: the step compiles once per run, never within an epoch."""
    for prefix in ("one", "mesh"):
        traces, epochs = run[f"{prefix}_traces"], run[f"{prefix}_epoch"]
        for epoch in np.unique(epochs):
            within = traces[epochs == epoch]
            assert within[0] == within[-1], f"{prefix}: epoch {epoch} retraced: {within}"
        assert traces[-1] == 1, f"{prefix}: {traces[-1]} compilations"


@pytest.mark.parametrize(("case", "rows"), [("spyx-auto", 64), ("nnx-explicit", 75)])
def test_mesh_run_equals_one_device_run(float64_runs: dict[str, Any], case: str, rows: int) -> None:
    run = float64_runs[case]
    check_sharding(run, rows)
    check_one_compilation(run)
    # the same plans, batches and scores for every trained example
    np.testing.assert_array_equal(run["mesh_plan_sizes"], [1500, 750, 750])
    np.testing.assert_array_equal(run["mesh_plan_indices"], run["one_plan_indices"])
    np.testing.assert_array_equal(run["mesh_plan_weights"], run["one_plan_weights"])
    np.testing.assert_array_equal(run["mesh_indices"], run["one_indices"])
    assert np.all(np.isfinite(run["mesh_scores"])) and np.all(run["mesh_scores"] > 0)
    np.testing.assert_allclose(run["mesh_scores"], run["one_scores"], rtol=1e-5)
    np.testing.assert_allclose(run["mesh_table"], run["one_table"], rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(run["mesh_loss"], run["one_loss"], rtol=1e-5)
    assert np.all(np.isfinite(run["mesh_loss"])) and run["mesh_loss"][-1] < 0.5 * run["mesh_loss"][0]
    assert int(run["mesh_nonfinite"]) == 0
    # drop_last=True leaves a few examples of the warm-up out; batches of 150 train them all
    assert int(run["mesh_unscored"]) == (0 if case == "nnx-explicit" else int(run["one_unscored"]))


def test_float32_mesh_run(tmp_path: Path) -> None:
    """A spyx model in float32 as users train it: shardings, first step, one compilation."""
    run = run_worker(tmp_path, "float32", "spyx-auto")["spyx-auto"]
    check_sharding(run, 64)
    check_one_compilation(run)
    first = int(run["one_step_sizes"][0])  # both runs start from the same parameters
    np.testing.assert_array_equal(run["mesh_indices"][:first], run["one_indices"][:first])
    np.testing.assert_allclose(run["mesh_scores"][:first], run["one_scores"][:first], rtol=1e-5)
    warmup = int(run["one_plan_sizes"][0])  # drawn before any score: the same plan
    np.testing.assert_array_equal(run["mesh_plan_indices"][:warmup], run["one_plan_indices"][:warmup])
    assert np.all(np.isfinite(run["mesh_scores"])) and np.all(
        np.isfinite(run["mesh_table"][run["mesh_indices"]])
    )
    assert np.all(np.isfinite(run["mesh_loss"])) and run["mesh_loss"][-1] < 0.5 * run["mesh_loss"][0]
    assert int(run["mesh_nonfinite"]) == 0


def test_docs_mesh_example_runs() -> None:
    """The JAX example of docs/distributed.md trains on the two devices as it is."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()
    section = page[page.index("## JAX: several devices with a mesh") :]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1
    check = (
        "\nassert n == 2 and scores.sharding.spec == P('data') and np.isfinite(float(loss))"
        "\nassert h.next_epoch == epochs and h.stats.unscored_examples == 0"
        "\nprint('trained', len(scores.sharding.device_set), float(loss))"
    )
    out = two_devices("-c", blocks[0] + check)
    assert out.startswith("trained 2 "), out

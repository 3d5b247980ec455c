"""Shared fixtures: the ``xp`` fixture runs a test once per Array API backend.

Which backends run is the nox session's choice, through ``SADP_XP_BACKENDS`` (a
comma-separated list of numpy, array_api_strict, torch, jax). A listed backend that cannot
be imported is an error, never a silent skip. Unset, every importable backend runs.

``SADP_XP_DEVICE=cuda`` puts the torch and jax arrays of the tests on the GPU (torch's default
device, jax's default device; ``ci/gpu-check`` sets it); unset or ``cpu``, they stay on the
host. A GPU asked for and not found is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not fail by chance on a case
# no one has seen); HYPOTHESIS_PROFILE=explore searches afresh, with more examples.
settings.register_profile("sadp", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=2_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sadp"))

ALL_BACKENDS = ("numpy", "array_api_strict", "torch", "jax")
DEVICES = ("cpu", "cuda")


def _xp_device() -> str:
    device = os.environ.get("SADP_XP_DEVICE", "cpu").strip() or "cpu"
    if device not in DEVICES:
        raise pytest.UsageError(f"unknown device {device!r} in SADP_XP_DEVICE; choose from {DEVICES}")
    return device


XP_DEVICE = _xp_device()  # checked once, when the tests are collected


def _load(name: str) -> ModuleType:
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if name == "array_api_strict":
        return importlib.import_module("array_api_strict")
    if name == "torch":
        torch = importlib.import_module("torch")
        torch.set_num_threads(1)
        if XP_DEVICE == "cuda":
            if not torch.cuda.is_available():
                raise pytest.UsageError("SADP_XP_DEVICE=cuda, but torch sees no CUDA device")
            torch.set_default_device("cuda")
        return importlib.import_module("array_api_compat.torch")
    if name == "jax":
        jax = importlib.import_module("jax")
        jax.config.update("jax_enable_x64", True)
        if XP_DEVICE == "cuda":
            try:
                jax.config.update("jax_default_device", jax.devices("gpu")[0])
            except RuntimeError as error:
                raise pytest.UsageError(f"SADP_XP_DEVICE=cuda, but jax sees no GPU: {error}") from None
        return importlib.import_module("jax.numpy")
    raise pytest.UsageError(f"unknown backend {name!r} in SADP_XP_BACKENDS; choose from {ALL_BACKENDS}")


def _selected_backends() -> list[str]:
    requested = os.environ.get("SADP_XP_BACKENDS")
    if requested:
        return [name.strip() for name in requested.split(",") if name.strip()]
    available = []
    for name in ALL_BACKENDS:
        try:
            _load(name)
        except ImportError:
            continue
        available.append(name)
    return available


BACKENDS = _selected_backends()


@pytest.fixture(scope="session", params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """An Array API namespace: numpy, array-api-strict, torch or jax."""
    return _load(request.param)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError):
        return np.asarray(x)


@pytest.fixture(scope="session")
def to_np() -> Any:
    """Convert an array of any backend to numpy (for comparisons in tests)."""
    return _to_numpy


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    return bool(importlib.import_module("torch").cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) tests marked ``backend("jax")`` when that backend is not selected,
    and tests marked ``gpu`` where no CUDA device exists (``nox -s gpu`` runs them on one)."""
    cuda = _cuda_available() if any(item.get_closest_marker("gpu") for item in items) else False
    selected, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("backend")
        unselected_backend = marker is not None and marker.args[0] not in BACKENDS
        needs_missing_gpu = item.get_closest_marker("gpu") is not None and not cuda
        (deselected if unselected_backend or needs_missing_gpu else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


# Framework test files run in their own nox sessions, which list them in SADP_FRAMEWORKS
# (a listed framework that is not installed is an error). Unset: every importable framework.
FRAMEWORK_TESTS = {
    "snntorch": "test_snntorch.py",
    "spikingjelly": "test_spikingjelly.py",
    "jax": "test_jax_adapter.py",
}


def _frameworks_under_test() -> set[str]:
    requested = os.environ.get("SADP_FRAMEWORKS")
    if requested is not None:
        names = {name.strip() for name in requested.split(",") if name.strip()}
        for name in names:
            if importlib.util.find_spec(name) is None:
                raise pytest.UsageError(f"SADP_FRAMEWORKS lists {name!r}, which is not installed")
        return names
    return {name for name in FRAMEWORK_TESTS if importlib.util.find_spec(name) is not None}


# Test files that need several frameworks at once: collected only where all are under test.
MULTI_FRAMEWORK_TESTS = {
    "test_benchmark_cli.py": ("snntorch", "spikingjelly", "jax"),
    "test_bench_models.py": ("snntorch", "jax"),
    "test_gpu_check.py": ("snntorch", "spikingjelly", "jax"),
    "test_distributed.py": ("snntorch", "spikingjelly"),
    "test_torch_loops.py": ("snntorch", "spikingjelly"),
    "test_torch_bad_input.py": ("snntorch",),
    "test_jax_mesh.py": ("jax",),
}
# Scripts that the tests above run in subprocesses, and helper modules they import: never
# collected (--doctest-modules would import them, and with them torch or jax, in sessions
# that have neither).
WORKER_SCRIPTS = ["distributed_worker.py", "jax_mesh_worker.py", "jax_snn.py"]
_UNDER_TEST = _frameworks_under_test()
collect_ignore = (
    [path for name, path in FRAMEWORK_TESTS.items() if name not in _UNDER_TEST]
    + [path for path, needs in MULTI_FRAMEWORK_TESTS.items() if not set(needs) <= _UNDER_TEST]
    + WORKER_SCRIPTS
)

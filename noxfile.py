"""Test sessions: ``nox`` runs them all; ``nox -s core`` runs one.

Every session installs what it needs into its own virtualenv. On a machine without CUDA
the CPU build of torch is pinned (``ci/constraints-cpu.txt``) so that pip does not pull
several GB of CUDA wheels.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = [
    "lint", "docs", "bench", "bench_cli", "core", "torch", "jax", "snntorch", "spikingjelly",
    "torch_loops", "distributed",
]  # fmt: skip
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "virtualenv"

ROOT = Path(__file__).parent
HAS_CUDA = shutil.which("nvidia-smi") is not None
TORCH = [] if HAS_CUDA else ["-c", str(ROOT / "ci" / "constraints-cpu.txt")]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _pytest(session: nox.Session, backends: str, *extra: str, frameworks: str = "") -> None:
    session.env["SADP_XP_BACKENDS"] = backends
    session.env["SADP_FRAMEWORKS"] = frameworks
    session.run("pytest", *extra, *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    """Core tests on numpy and array-api-strict, doctests, and the no-torch/no-jax import check."""
    session.install(".[test]")
    _pytest(
        session, "numpy,array_api_strict", "tests", "--doctest-modules", "--pyargs", "sadp_core",
        "--ignore-glob=*/sadp_core/adapters/*",
    )  # fmt: skip


@nox.session
def torch(session: nox.Session) -> None:
    """Core tests on torch arrays (CPU torch pinned on machines without CUDA)."""
    session.install(".[test]", "torch", *TORCH)
    _pytest(session, "torch", "tests", "-m", "not gpu")


@nox.session
def jax(session: nox.Session) -> None:
    """Core tests on jax arrays (jax on CPU, 64-bit enabled by the tests where needed), then the
    JAX adapter and its doctests on real spyx, flax NNX and equinox models (a second run, in
    32-bit mode as users run it), and data-parallel training on two forced CPU devices."""
    session.install(".[test,jax,spyx]", "equinox", "scikit-learn")
    _pytest(session, "jax", "tests", "-m", "not gpu")
    _pytest(
        session, "numpy", "tests/test_jax_adapter.py", "tests/test_jax_mesh.py", "--doctest-modules",
        "--pyargs", "sadp_core.adapters.jax", "sadp_core.adapters._jax_tap", "-m", "not gpu",
        frameworks="jax",
    )  # fmt: skip
    # the same mistakes give the same messages on a JAX and an snnTorch handle: needs both
    session.install(".[snntorch]", *TORCH)
    _pytest(session, "numpy", "tests/test_jax_parity.py", frameworks="jax,snntorch")


def _adapter_session(session: nox.Session, framework: str) -> None:
    """Tests and doctests of one framework adapter, on real models of that framework."""
    session.install(f".[test,{framework}]", "scikit-learn", *TORCH)
    _pytest(
        session, "numpy", f"tests/test_{framework}.py", "--doctest-modules", "--pyargs",
        f"sadp_core.adapters.{framework}", "-m", "not gpu", frameworks=framework,
    )  # fmt: skip


@nox.session
def snntorch(session: nox.Session) -> None:
    """The snnTorch adapter (CPU torch pinned on machines without CUDA)."""
    _adapter_session(session, "snntorch")


@nox.session
def spikingjelly(session: nox.Session) -> None:
    """The SpikingJelly adapter (CPU torch pinned on machines without CUDA)."""
    _adapter_session(session, "spikingjelly")


@nox.session
def torch_loops(session: nox.Session) -> None:
    """The training loops people write (eval mode, accumulation, two losses, a frozen readout,
    float64, autocast, compile, DataLoader workers), on real SpikingJelly and snnTorch models,
    the guide's examples of them, and bad input to every torch handle method."""
    session.install(".[test,snntorch,spikingjelly]", *TORCH)
    _pytest(
        session, "numpy", "tests/test_torch_loops.py", "tests/test_torch_bad_input.py",
        frameworks="snntorch,spikingjelly",
    )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format); mypy --strict on the core, and on the benchmark package with
    the frameworks unresolved (they are not installed here; see pyproject.toml)."""
    session.install("ruff", "mypy", "numpy", "array-api-compat")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "sadp_core")
    session.run("mypy", "sadp_bench")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation (warnings are errors) and run its doctests."""
    session.install(".[docs]", "torch", *TORCH)  # torch: the API page documents the torch handle
    build = ROOT / "docs" / "_build"
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(build / "html"))
    session.run("sphinx-build", "-W", "--keep-going", "-b", "doctest", "docs", str(build / "doctest"))


@nox.session
def bench(session: nox.Session) -> None:
    """Run the core benchmark once at a small size (the figures are printed, not asserted)."""
    session.install(".")
    session.run("sadp-bench", "speed", "--num-examples", "1000000", "--repeats", "3")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: Fashion-MNIST with all data, then with SADP (README quick start)."""
    if not FASHION_MNIST.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "dataset-fashion-mnist", external=True)
    session.install(".[snntorch,bench]", *TORCH)
    session.run("sadp-bench", "main", *session.posargs)


@nox.session
def bench_cli(session: nox.Session) -> None:
    """Smoke test of the SNN benchmark CLI (sadp-bench, and its shim benchmarks/sadp_bench.py) on
    scikit-learn's digits, the JAX models against the snnTorch ones, and the dry run of the GPU
    check (``bash ci/gpu-check --dry-run``)."""
    # equinox: the dry run collects tests/test_jax_adapter.py (its gpu tests), which imports it
    session.install(".[test,snntorch,spikingjelly,spyx,bench]", "equinox", *TORCH)
    _pytest(
        session, "numpy", "tests/test_benchmark_cli.py", "tests/test_bench_models.py",
        "tests/test_gpu_check.py",
        frameworks="snntorch,spikingjelly,jax",
    )  # fmt: skip


@nox.session
def distributed(session: nox.Session) -> None:
    """DDP with two CPU processes (torchrun, gloo on loopback), snnTorch and SpikingJelly."""
    session.install(".[test,snntorch,spikingjelly]", "scikit-learn", *TORCH)
    _pytest(
        session, "numpy", "tests/test_distributed.py", "--doctest-modules", "--pyargs",
        "sadp_core.adapters._distributed", frameworks="snntorch,spikingjelly",
    )  # fmt: skip


@nox.session
def gpu(session: nox.Session) -> None:
    """The adapter tests marked ``gpu`` on a CUDA device (not part of the default sessions), for
    machines with a package index; on a lent GPU machine without one, ``bash ci/gpu-check``
    (docs/gpu.md) runs these and more from carried wheels."""
    if not HAS_CUDA:
        session.error("no CUDA device here (nvidia-smi not found); run this session on a GPU machine")
    session.install(".[test,snntorch,spikingjelly,spyx]", "jax[cuda12]", "equinox", "scikit-learn")
    _pytest(
        session, "numpy", "tests/test_snntorch.py", "tests/test_spikingjelly.py",
        "tests/test_jax_adapter.py", "-m", "gpu", frameworks="snntorch,spikingjelly,jax",
    )  # fmt: skip

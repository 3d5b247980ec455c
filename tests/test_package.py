"""Packaging promises: no torch or jax import, typed package, attach() dispatch."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

import sadp_core

WHOLE_CYCLE = """
import sys
import numpy as np
import sadp_core

pruner = sadp_core.Pruner(num_examples=100, prune_ratio=0.5, epochs=4, seed=0)
for epoch in range(4):
    plan = pruner.plan(epoch)
    spikes = np.random.default_rng(epoch).random((4, len(plan.indices), 8))
    errors = np.random.default_rng(epoch).normal(size=(4, len(plan.indices), 3))
    pruner.update(plan.indices, sadp_core.spike_aware_score(*sadp_core.trace_norms(spikes, errors)))
state = pruner.state_dict()
sadp_core.Pruner(num_examples=100, prune_ratio=0.5, epochs=4, seed=0).load_state_dict(state)
try:
    sadp_core.attach(object(), num_examples=100, epochs=4)
except sadp_core.SADPError:
    pass
heavy = sorted(name for name in ("torch", "jax", "jaxlib", "flax") if name in sys.modules)
print(",".join(heavy) or "none")
"""


def test_import_and_a_whole_pruner_cycle_never_import_torch_or_jax():
    result = subprocess.run([sys.executable, "-c", WHOLE_CYCLE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "none", result.stdout + result.stderr


def test_package_is_typed():
    assert resources.files("sadp_core").joinpath("py.typed").is_file()


def test_adapters_package_is_installed_under_sadp_core():
    import sadp_core.adapters  # the package-dir mapping of pyproject.toml

    assert sadp_core.adapters.__name__ == "sadp_core.adapters"


def test_attach_refuses_an_unknown_model_with_a_clear_message():
    with pytest.raises(sadp_core.SADPError, match="found no adapter for a model of type dict"):
        sadp_core.attach({}, num_examples=10, epochs=2)

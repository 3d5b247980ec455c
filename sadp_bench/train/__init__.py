"""Training loops of the SNN benchmark: one run interface, one implementation per framework.

:mod:`.common` (settings, run specification, the :class:`~.common.Run` interface, speedups),
:mod:`.torch` (snnTorch and SpikingJelly), :mod:`.jax` (spyx through the JAX adapter, imported
only for JAX runs), :mod:`.compare` (a comparison's runs, round-robin by epoch). Importing
this package imports neither torch nor JAX.
"""

from __future__ import annotations

from .common import Run, RunSpec, Settings, add_speedups
from .compare import make_run, run_comparison

__all__ = ["Run", "RunSpec", "Settings", "add_speedups", "make_run", "run_comparison"]

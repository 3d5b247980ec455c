"""Cost of the JAX adapter per training step: the same as ``sadp-bench overhead jax``.

Kept so that ``python benchmarks/jax_overhead.py`` works; the code is ``sadp_bench.speed.jax``
(installed with sadp-core: ``pip install .``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.speed.jax import main

if __name__ == "__main__":
    sys.exit(main())

"""Three ways of tracing a Linear readout, timed: the same as ``sadp-bench overhead taps``.

Kept so that ``python benchmarks/tap_designs.py`` works; the code is ``sadp_bench.speed.taps``
(installed with sadp-core: ``pip install .``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.speed.taps import main

if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of the sadp-core hot paths: the same as ``sadp-bench speed``.

Kept so that ``python benchmarks/core_speed.py`` works; the code is ``sadp_bench.speed.core``
(installed with sadp-core: ``pip install .``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.speed.core import main

if __name__ == "__main__":
    sys.exit(main())

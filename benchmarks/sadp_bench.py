"""The SNN benchmark of sadp-core: the same as the ``sadp-bench`` command (``sadp-bench --help``).

Kept so that ``python benchmarks/sadp_bench.py`` works; the code is ``sadp_bench.cli``
(installed with sadp-core: ``pip install .``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="sadp_bench.py"))

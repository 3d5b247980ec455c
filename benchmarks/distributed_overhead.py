"""Cost of SADP's score exchange under DistributedDataParallel: ``sadp-bench overhead distributed``.

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/distributed_overhead.py

Kept so that this command works; the code is ``sadp_bench.speed.distributed`` (installed
with sadp-core: ``pip install .``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.speed.distributed import main

if __name__ == "__main__":
    sys.exit(main())

"""The benchmark of sadp-core: every pruning method side by side on real spiking networks.

Installed with ``pip install "sadp-core[bench,snntorch]"`` (add ``spikingjelly`` and
``spyx`` for the other frameworks); the command is ``sadp-bench`` (:mod:`sadp_bench.cli`).
``docs/architecture.md`` says what lives in each module. Importing this package imports
neither torch nor JAX: each subcommand imports the frameworks it runs.
"""

from __future__ import annotations

__all__: list[str] = []

"""The main job: train a spiking network on Fashion-MNIST with all data, then with SADP.

    python benchmarks/fashion_mnist.py            # or: nox -s demo

The same as ``sadp-bench main`` (all its options apply: ``--data DIR``,
``--dataset digits``, ``--epochs``, ``--prune-ratio``, ...). A snnTorch LIF network
(784-256-10, T=4 steps, direct-current input, cross-entropy at every step) is trained
through ``sadp_core.attach`` for 8 epochs on all 60,000 examples and, interleaved epoch by
epoch, with spike-aware data pruning at r = 0.3, from the same initial weights. It prints a
table (test accuracy, training wall time, share of examples processed, achieved and
theoretical speedup) and writes ``results/main/results.json`` and
``results/main/accuracy_vs_time.png``.
"""

from __future__ import annotations

import sys

import _shim  # noqa: F401  (before sadp_bench: see _shim.py)

from sadp_bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["main", *sys.argv[1:]], prog="sadp_bench.py"))

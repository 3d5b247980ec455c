"""Cost of SADP's score exchange under DistributedDataParallel, next to DDP's own all-reduce.

    sadp-bench overhead distributed [--nproc 2]     # starts the ranks with torch.distributed.run
    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/distributed_overhead.py

Two ranks (gloo on CPU here; NCCL when each rank has a GPU) train two DDP copies of the
same snnTorch LIF network (784-256-10, T=4, batch 128 per rank, one torch thread each),
one with the handle attached, on the same batches, steps alternating. Rank 0 prints:
the median step time of each and their ratio; the time the handle spent exchanging scores
(``synchronize``: per exchange and per step); and, for scale, one ``all_reduce`` of a
tensor as large as the model's gradients, which DDP runs (in buckets) at every step.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from sadp_core.adapters import _distributed
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sadp_core

from ..models.torch import SnnTorchOverheadNet


def _launch(argv: list[str], processes: int) -> int:
    """Run this measurement under ``torch.distributed.run`` with ``processes`` ranks."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "sadp_bench.speed.distributed", *argv,
    ]  # fmt: skip
    return subprocess.run(command, check=False).returncode


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Measure on every rank and print on rank 0; outside ``torch.distributed.run``, start it
    with ``--nproc`` ranks running this measurement."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=256, help="training steps per copy")
    parser.add_argument("--batch-size", type=int, default=128, help="per rank")
    parser.add_argument(
        "--nproc", type=int, default=2, help="ranks to start when not run under torch.distributed.run"
    )
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        if args.nproc < 1:
            parser.error("--nproc must be at least 1")
        return _launch(["--steps", str(args.steps), "--batch-size", str(args.batch_size)], args.nproc)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, ranks = dist.get_rank(), dist.get_world_size()
    device = (
        torch.device("cuda", rank % torch.cuda.device_count()) if backend == "nccl" else torch.device("cpu")
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = SnnTorchOverheadNet(4, hoisted=True).to(device)
    examples = args.steps * args.batch_size * ranks
    plain = DistributedDataParallel(copy.deepcopy(base))
    attached = DistributedDataParallel(copy.deepcopy(base))
    handle = sadp_core.attach(attached, num_examples=examples, prune_ratio=0.0, epochs=1, seed=0)
    exchange_times: list[float] = []
    exchange = handle.synchronize

    def timed_exchange() -> None:
        start = time.perf_counter()
        exchange()
        exchange_times.append(time.perf_counter() - start)

    handle.synchronize = timed_exchange
    collective_times: list[float] = []
    collectives = _distributed.exchange

    def timed_collectives(indices: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        start = time.perf_counter()
        try:
            exchanged: list[tuple[np.ndarray, np.ndarray]] = collectives(indices, values)
            return exchanged
        finally:
            collective_times.append(time.perf_counter() - start)

    _distributed.exchange = timed_collectives
    batches = list(handle.batch_sampler(args.batch_size))
    data = torch.rand(examples, 784, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.randint(0, 10, (examples,), generator=torch.Generator().manual_seed(2)).to(device)
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizers = {
        "plain": torch.optim.Adam(plain.parameters()),
        "attached": torch.optim.Adam(attached.parameters()),
    }
    times: dict[str, list[float]] = {"plain": [], "attached": []}
    for step, batch in enumerate(batches):
        idx = torch.tensor(batch)
        x, y = data[idx.to(device)], labels[idx.to(device)]
        for name in ("plain", "attached") if step % 2 == 0 else ("attached", "plain"):
            model, optimizer = (plain, optimizers[name]) if name == "plain" else (attached, optimizers[name])
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            losses = criterion(model(x), y)
            loss = handle.weighted_loss(losses, idx) if name == "attached" else losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    handle.detach()  # the last exchange (outside the timed steps)

    gradient = torch.zeros(sum(p.numel() for p in base.parameters()), device=device)
    reduce_times = []
    for _ in range(50):
        start = time.perf_counter()
        dist.all_reduce(gradient)
        if device.type == "cuda":
            torch.cuda.synchronize()
        reduce_times.append(time.perf_counter() - start)
    warm = len(batches) // 10
    plain_ms = 1e3 * statistics.median(times["plain"][warm:])
    attached_ms = 1e3 * statistics.median(times["attached"][warm:])
    ratio = statistics.median(
        a / p for a, p in zip(times["attached"][warm:], times["plain"][warm:], strict=True)
    )
    timed_exchanges = exchange_times[1:-1]  # the first ran before the steps, the last in detach()
    if rank == 0:
        print(f"{ranks} ranks, {backend}, torch {torch.__version__}, snnTorch LIF 784-256-10, T=4")
        print(
            f"batch {args.batch_size} per rank; DDP step: plain {plain_ms:.2f} ms, "
            f"attached {attached_ms:.2f} ms"
        )
        print(f"median ratio attached / plain: {ratio:.3f}")
        if timed_exchanges:
            total = 1e3 * sum(timed_exchanges) / len(batches)
            wire = 1e3 * sum(collective_times[1:-1]) / len(batches)
            print(
                f"synchronize(): {len(timed_exchanges)} calls in {len(batches)} steps, "
                f"{1e3 * float(np.median(timed_exchanges)):.2f} ms each: {total:.3f} ms per step, of which "
                f"{wire:.3f} ms in the two collectives (waiting for the slower rank included)"
            )
        reduce_ms = 1e3 * statistics.median(reduce_times)
        print(
            f"one all_reduce of the {gradient.numel()} gradient floats (DDP: every step): {reduce_ms:.2f} ms"
        )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

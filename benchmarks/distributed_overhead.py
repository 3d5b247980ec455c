"""Cost of SADP's score exchange under DistributedDataParallel, next to DDP's own all-reduce.

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
import statistics
import time

import numpy as np
import snntorch as snn
import torch
import torch.distributed as dist
from sadp_core.adapters import _distributed
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sadp_core


class Net(nn.Module):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(784, 256), snn.Leaky(beta=0.9)
        self.fc2, self.lif2 = nn.Linear(256, 10), snn.Leaky(beta=0.9)
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        current, outputs = self.fc1(x), []
        for _ in range(self.steps):
            spikes, mem1 = self.lif1(current, mem1)
            _, mem2 = self.lif2(self.fc2(spikes), mem2)
            outputs.append(mem2)
        return torch.stack(outputs).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=256, help="training steps per copy")
    parser.add_argument("--batch-size", type=int, default=128, help="per rank")
    args = parser.parse_args()
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
    base = Net(4).to(device)
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

    handle.synchronize = timed_exchange  # type: ignore[method-assign]
    collective_times: list[float] = []
    collectives = _distributed.exchange

    def timed_collectives(indices: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        start = time.perf_counter()
        try:
            return collectives(indices, values)
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


if __name__ == "__main__":
    main()

"""Cost of the PyTorch adapters: a training step with the handle attached over one without.

    sadp-bench overhead torch                  # all three networks, 400 steps each
    sadp-bench overhead torch --steps 100 --network snntorch

(``python benchmarks/torch_overhead.py`` from a clone is the same.) The networks are
:class:`~sadp_bench.models.torch.SnnTorchOverheadNet` and
:class:`~sadp_bench.models.torch.SpikingJellyOverheadNet`.

The network is a LIF network, 784-256-10, T=4, the same in both frameworks: the input is
presented at every time step, through the first layer each time (as in the snnTorch
tutorials; SpikingJelly runs it multi-step on the input repeated T times). The row
``snntorch-hoisted`` runs the first layer once per step, outside the time loop: the
cheapest step of the same network, where the trace's share is largest.

For each network, copies train side by side on the same batches of 128, with one torch
thread: the attached copy computes its loss with ``h.weighted_loss`` (and so records its
trace and updates the scores in every backward), the plain copy with the same weights by
hand. The copies take turns at running first, so that machine noise hits all alike; the
printed ratio is the median over steps of the attached run's time over the plain run's
time of the same step (target: at most 1.03). A third copy carries only bare hooks (the
input norm and the error norm of every readout call, nothing kept or scored): its ratio
is what any hook-based trace costs at least.

On a GPU (``--device cuda``) models and data live on the device, and each timed step
starts and ends with ``torch.cuda.synchronize()``, so that it covers the step's own GPU
work; ``--json PATH`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import sadp_core

from ..models.torch import SnnTorchOverheadNet, SpikingJellyOverheadNet

TARGET = 1.03


def bare_hooks(model: nn.Module) -> None:
    """The least any hook-based trace can do, for comparison: on every call of the readout,
    the norm of its input, and a hook that takes the norm of the error at its output;
    nothing is kept, scored or checked."""
    readout = model.get_submodule(readout_name(model))

    def error_norm(grad: torch.Tensor) -> None:
        torch.linalg.vector_norm(grad, dim=-1)

    def forward_hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        torch.linalg.vector_norm(args[0].detach(), dim=-1)
        output.register_hook(error_norm)

    readout.register_forward_hook(forward_hook)


def readout_name(model: nn.Module) -> str:
    names: list[str] = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1]


NETWORKS: dict[str, Callable[[int], nn.Module]] = {
    "snntorch": SnnTorchOverheadNet,
    "snntorch-hoisted": partial(SnnTorchOverheadNet, hoisted=True),
    "spikingjelly": SpikingJellyOverheadNet,
}


def measure(
    network: str, steps: int, batch: int, time_steps: int, device: str = "cpu"
) -> dict[str, tuple[float, float]]:
    """Median step time of each copy, and the median per-step ratio of each over "plain"."""
    torch.manual_seed(0)
    where = torch.device(device)
    cuda = where.type == "cuda"
    models = {"plain": NETWORKS[network](time_steps).to(where)}
    models["attached"] = copy.deepcopy(models["plain"])
    models["bare hooks"] = copy.deepcopy(models["plain"])
    bare_hooks(models["bare hooks"])
    examples = steps * batch
    handle = sadp_core.attach(models["attached"], num_examples=examples, prune_ratio=0.3, epochs=1, seed=0)
    plan = handle.plan(0)
    data = torch.rand(examples, 784).to(where)
    labels = torch.randint(0, 10, (examples,)).to(where)
    weights = torch.tensor(plan.weights, dtype=torch.float32).to(where)
    optimizers = {name: torch.optim.Adam(model.parameters(), 1e-3) for name, model in models.items()}
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    criterion = nn.CrossEntropyLoss(reduction="none")
    for step in range(steps):
        idx = torch.tensor(plan.indices[step * batch : (step + 1) * batch])
        on_device = idx.to(where)
        x, y, w = data[on_device], labels[on_device], weights[step * batch : (step + 1) * batch]
        for name in names[step % 3 :] + names[: step % 3]:  # each copy in each position in turn
            model, optimizer = models[name], optimizers[name]
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            losses = criterion(model(x), y)
            loss = handle.weighted_loss(losses, idx) if name == "attached" else (w * losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    handle.detach()
    assert np.isfinite(handle.scores[plan.indices[: steps * batch]]).all()
    warm = steps // 10  # leave out the first steps (allocator and cache warm-up)
    plain = times["plain"][warm:]
    # the copies of one step run back to back: the median of their ratios resists drift
    return {
        name: (
            statistics.median(times[name][warm:]),
            statistics.median(t / p for t, p in zip(times[name][warm:], plain, strict=True)),
        )
        for name in names
    }


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line), measure, print; 0 when done."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", choices=[*NETWORKS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="torch device ('cuda': a GPU; default cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error("--steps must be at least 10 (the first tenth is left out as warm-up)")
    torch.set_num_threads(1)
    networks = list(NETWORKS) if args.network == "all" else [args.network]
    where = args.device
    if torch.device(args.device).type == "cuda":
        where = f"{args.device} ({torch.cuda.get_device_name(args.device)})"
    print(
        f"torch {torch.__version__}, 1 thread, on {where}, LIF 784-256-10, T={args.time_steps}, "
        f"batch {args.batch_size}"
    )
    print(
        f"{'network':<18}{'plain ms':>10}{'attached ms':>13}{'ratio':>8}  {'<= ' + str(TARGET):<14}"
        "bare hooks ratio"
    )
    rows = []
    for network in networks:
        result = measure(network, args.steps, args.batch_size, args.time_steps, args.device)
        (plain, _), (attached, ratio), (_, bare) = result["plain"], result["attached"], result["bare hooks"]
        rows.append(
            {"network": network, "plain_ms": 1e3 * plain, "attached_ms": 1e3 * attached, "ratio": ratio,
             "bare_hooks_ratio": bare}
        )  # fmt: skip
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(
            f"{network:<18}{1e3 * plain:>10.2f}{1e3 * attached:>13.2f}{ratio:>8.3f}  "
            f"{verdict:<14}{bare:>6.3f}"
        )
    if args.json is not None:
        settings = {"steps": args.steps, "batch_size": args.batch_size, "time_steps": args.time_steps}
        args.json.write_text(json.dumps({"device": args.device, **settings, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prototype: what three ways of tracing a Linear readout cost per training step (issue 3).

    sadp-bench overhead taps [--steps 400]      # or: python benchmarks/tap_designs.py

The snnTorch network of ``sadp-bench overhead torch`` (784-256-10, T=4, batch 128, one thread) in
its hoisted form, the cheapest step, where the differences show most; four copies trained
side by side on the same batches, each in every position in turn:

- ``plain``: no trace;
- ``bare hooks``: a forward hook takes the input norm and hooks the output for the error
  norm (what the handle did before it swapped the readout's class, without its bookkeeping);
- ``identity fn``: a forward hook wraps the output in an identity ``autograd.Function``
  whose backward takes both norms;
- ``linear fn``: the readout's class is swapped for one whose forward is an
  ``autograd.Function`` computing the Linear itself, and both norms in its backward (the
  mechanism the handle now uses for a plain Linear readout).

Prints the median per-step ratio of each over ``plain``. The norms are computed and
dropped: this measures the mechanism, not the handle (no scores, no checks).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..models.torch import SnnTorchOverheadNet

norm = torch.linalg.vector_norm


def _error_norm(grad: torch.Tensor) -> None:
    norm(grad, dim=-1)


def _bare_hooks(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    norm(args[0].detach(), dim=-1)
    output.register_hook(_error_norm)


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs)
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inputs,) = ctx.saved_tensors
        norm(inputs, dim=-1)
        norm(grad, dim=-1)
        return grad, None


def _identity_fn(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return _Identity.apply(output, args[0].detach())


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        return torch.addmm(bias, inputs, weight.t())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, weight = ctx.saved_tensors
        norm(inputs, dim=-1)
        norm(grad, dim=-1)
        return grad.mm(weight), grad.t().mm(inputs), grad.sum(0)


class _FunctionLinear(nn.Linear):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return _Linear.apply(inputs, self.weight, self.bias)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line), measure, print; 0 when done."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {"plain": SnnTorchOverheadNet(4, hoisted=True)}
    for name in ("bare hooks", "identity fn", "linear fn"):
        models[name] = copy.deepcopy(models["plain"])
    models["bare hooks"].fc2.register_forward_hook(_bare_hooks)
    models["identity fn"].fc2.register_forward_hook(_identity_fn)
    models["linear fn"].fc2.__class__ = _FunctionLinear
    optimizers = {name: torch.optim.Adam(model.parameters(), 1e-3) for name, model in models.items()}
    data, labels = torch.rand(args.steps * 128, 784), torch.randint(0, 10, (args.steps * 128,))
    criterion, weights = nn.CrossEntropyLoss(reduction="none"), torch.rand(128)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.steps):
        x, y = data[step * 128 : (step + 1) * 128], labels[step * 128 : (step + 1) * 128]
        for name in names[step % 4 :] + names[: step % 4]:
            start = time.perf_counter()
            loss = (weights * criterion(models[name](x), y)).mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            times[name].append(time.perf_counter() - start)
    warm = args.steps // 10
    for name in names:
        ratio = statistics.median(
            t / p for t, p in zip(times[name][warm:], times["plain"][warm:], strict=True)
        )
        print(f"{name:<12} {1e3 * statistics.median(times[name][warm:]):7.2f} ms  ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

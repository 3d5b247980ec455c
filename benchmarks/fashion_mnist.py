"""The main job: train a spiking network on Fashion-MNIST with all data, then with SADP.

    python benchmarks/fashion_mnist.py            # or: nox -s demo

Trains a LIF network (784-256-10, T=4 steps, direct-current input, readout = time-mean of
the last Linear, cross-entropy) twice with the same seed: on all data, then with
spike-aware data pruning at r = 0.3. Prints a table (test accuracy, training wall time,
share of examples processed, achieved and theoretical speedup), and writes every figure to
``results/main/results.json`` and a plot of test accuracy against wall time to
``results/main/accuracy_vs_time.png``.

This job drives :class:`sadp_core.Pruner` by hand: the network is plain torch, and the
trace the score needs (the readout's input spikes and the error at its output, per step)
is taken in the training step itself. It shows every moving part of SADP in one page.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from idx_data import FASHION_MNIST_DIR, MissingData, Split, load_digits_split, load_idx_directory
from torch import nn
from tqdm import tqdm

import sadp_core


class SpikeFn(torch.autograd.Function):
    """Heaviside spike with a fast-sigmoid surrogate gradient."""

    @staticmethod
    def forward(ctx, membrane):  # type: ignore[override]
        ctx.save_for_backward(membrane)
        return (membrane > 0).to(membrane.dtype)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (membrane,) = ctx.saved_tensors
        return grad_output / (1 + 10 * membrane.abs()) ** 2


class LIFNet(nn.Module):
    """784-H-10 leaky integrate-and-fire network; returns per-step readout outputs and spikes."""

    def __init__(self, inputs: int, hidden: int, classes: int, steps: int, beta: float = 0.9):
        super().__init__()
        self.encoder = nn.Linear(inputs, hidden)
        self.readout = nn.Linear(hidden, classes)
        self.steps, self.beta = steps, beta

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        current = self.encoder(x)  # direct-current input: the same drive at every step
        membrane = torch.zeros_like(current)
        spikes = []
        for _ in range(self.steps):
            membrane = self.beta * membrane + current
            spike = SpikeFn.apply(membrane - 1.0)
            membrane = membrane - spike.detach()  # soft reset
            spikes.append(spike)
        spikes_t = torch.stack(spikes)  # [T, B, H]
        return self.readout(spikes_t), spikes_t  # [T, B, C], [T, B, H]


def train_one_run(method: str, args: argparse.Namespace, train: Split, test: Split) -> dict:
    torch.manual_seed(args.seed)
    model = LIFNet(train.images.shape[1], args.hidden, int(train.labels.max()) + 1, args.steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    pruner = sadp_core.Pruner(
        num_examples=len(train.labels), prune_ratio=args.prune_ratio, epochs=args.epochs,
        seed=args.seed, method=method,
    )  # fmt: skip
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    curve, train_seconds = [], 0.0
    for epoch in range(args.epochs):
        started = time.perf_counter()
        plan = pruner.plan(epoch)
        indices = torch.tensor(plan.indices)  # a copy: plans are read-only
        weights = torch.tensor(plan.weights, dtype=torch.float32)
        batches = range(0, len(indices), args.batch_size)
        bar = tqdm(batches, desc=f"{method:>4} epoch {epoch + 1}/{args.epochs} ({plan.phase})", leave=False)
        model.train()
        for start in bar:
            idx, w = indices[start : start + args.batch_size], weights[start : start + args.batch_size]
            outputs, spikes = model(images[idx])
            outputs.retain_grad()
            losses = nn.functional.cross_entropy(outputs.mean(0), labels[idx], reduction="none")
            loss = (w * losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if pruner.expects == "bound":
                # outputs.grad is (w_i / B) * dL_i/do_t: undo the weight and the batch mean
                errors = outputs.grad * (len(idx) / w)[None, :, None]
                spike_norms, error_norms = sadp_core.trace_norms(spikes.detach(), errors)
                pruner.update(idx, sadp_core.spike_aware_score(spike_norms, error_norms))
            else:
                pruner.update(idx, losses.detach())
        train_seconds += time.perf_counter() - started
        accuracy = evaluate(model, test, args.batch_size * 4)
        curve.append({"epoch": epoch, "wall_s": train_seconds, "test_accuracy": accuracy})
        tqdm.write(f"{method:>4} epoch {epoch + 1}: test accuracy {accuracy:.4f}, {train_seconds:.1f} s")
    stats = pruner.stats
    return {
        "method": method,
        "prune_ratio": args.prune_ratio if method != "full" else 0.0,
        "test_accuracy": curve[-1]["test_accuracy"],
        "train_wall_s": train_seconds,
        "processed_fraction": stats.processed_fraction,
        "theoretical_speedup": stats.theoretical_speedup,
        "curve": curve,
    }


@torch.no_grad()
def evaluate(model: LIFNet, test: Split, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(test.labels), batch_size):
        outputs, _ = model(torch.from_numpy(test.images[start : start + batch_size]))
        correct += int(
            (outputs.mean(0).argmax(1) == torch.from_numpy(test.labels[start : start + batch_size])).sum()
        )
    return correct / len(test.labels)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for run in runs:
        label = "all data" if run["method"] == "full" else f"SADP r={run['prune_ratio']}"
        axis.plot([p["wall_s"] for p in run["curve"]], [100 * p["test_accuracy"] for p in run["curve"]],
                  marker="o", label=label)  # fmt: skip
    axis.set_xlabel("training wall time (s)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Fashion-MNIST, LIF 784-256-10, T=4")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=FASHION_MNIST_DIR, help="directory of the four idx files"
    )
    parser.add_argument("--dataset", choices=["idx", "digits"], default="idx",
                        help="'digits': scikit-learn's 8x8 digits instead (quick check)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--prune-ratio", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest here)")
    parser.add_argument("--out", type=Path, default=Path("results/main"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        train, test = (
            load_digits_split(args.seed) if args.dataset == "digits" else load_idx_directory(args.data)
        )
    except MissingData as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    runs = [train_one_run(method, args, train, test) for method in ("full", "sadp")]
    full_time = runs[0]["train_wall_s"]
    for run in runs:
        run["speedup"] = full_time / run["train_wall_s"]
    print_table(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(sys.argv),
        "dataset": str(args.data) if args.dataset == "idx" else "sklearn digits",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sadp_core": sadp_core.__version__,
            "processor": platform.machine(),
        },
        "runs": runs,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    plot(runs, args.out / "accuracy_vs_time.png")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'accuracy_vs_time.png'}")
    return 0


def print_table(runs: list[dict]) -> None:
    header = (
        f"{'run':<12}{'test acc':>10}{'train s':>10}{'share':>8}{'speedup':>9}{'max':>7}{'achieved/max':>14}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for run in runs:
        name = "all data" if run["method"] == "full" else f"sadp r={run['prune_ratio']}"
        print(
            f"{name:<12}{100 * run['test_accuracy']:>9.2f}%{run['train_wall_s']:>10.1f}"
            f"{run['processed_fraction']:>8.3f}{run['speedup']:>8.2f}x{run['theoretical_speedup']:>6.2f}x"
            f"{run['speedup'] / run['theoretical_speedup']:>14.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())

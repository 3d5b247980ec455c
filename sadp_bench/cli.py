"""The SNN benchmark of sadp-core: every pruning method, side by side, on real SNNs.

Subcommands (``sadp-bench``, or ``python benchmarks/sadp_bench.py`` from a clone)::

    sadp-bench main      # the main job: full data vs SADP r=0.3 (README)
    sadp-bench run       # the grid: frameworks x models x methods x ratios x seeds
    sadp-bench probe     # gradient-variance probe and bound quality
    sadp-bench report    # docs/benchmarks.md and plots from the JSON
    sadp-bench speed     # planning and update costs of the core (Pruner.plan, Pruner.update)
    sadp-bench overhead {torch,jax,distributed,taps}   # cost per step of the adapters

``main`` trains a snnTorch LIF network (784-256-10, T=4) on Fashion-MNIST twice, all data
and SADP at r = 0.3, with a progress bar per epoch; prints test accuracy, training wall
time, share of examples processed, achieved and theoretical speedup; writes
``results/main/results.json`` and ``results/main/accuracy_vs_time.png``.

``run`` trains, for each (framework, model, seed), the full-data run and every
(method, ratio), round-robin one epoch at a time in one process so that wall-clock ratios
are measured side by side (``sadp_bench.train``), and writes ``OUT/results.json`` (a list
of records, one per run) and ``OUT/meta.json``. ``probe`` trains a full-data checkpoint
and measures, on a subset of the training set, each method's epoch-gradient error at
r = 0.5 over many draws and the Spearman correlation of each score with the true
per-example gradient norm (``sadp_bench.probes``); it writes ``OUT/probes.json``.
``report`` merges result directories into ``docs/benchmarks/`` and writes
``docs/benchmarks.md`` (``sadp_bench.report``). ``speed`` and ``overhead`` pass their
options on to the measurement (``sadp-bench speed --help``, ``sadp-bench overhead torch --help``).

Methods: full, random, infobatch, ucb, eps_greedy, loss, sadp (readout scope), sadp_all
(``scope="all"``), oracle (exact per-example whole-model gradient norm; MLP only).
Frameworks: snntorch, spikingjelly, jax (the snnTorch MLP and conv net in spyx, through the
JAX adapter, ``sadp_bench.train.jax``; not in ``probe``).
Models: mlp, conv. Data: the four idx files of ``--data DIR`` (default: Debian's
``dataset-fashion-mnist``), or ``--dataset digits`` (scikit-learn's 8x8 digits).
torch runs on one thread (DESIGN.md section 7), and so does XLA on the CPU (``--threads``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sadp_core import SADPError

from .data import FASHION_MNIST_DIR, GET_DATA, MissingData
from .methods import METHODS
from .models import FRAMEWORKS, MODELS, TORCH_FRAMEWORKS

OVERHEAD = {
    "torch": "sadp_bench.speed.torch",
    "jax": "sadp_bench.speed.jax",
    "distributed": "sadp_bench.speed.distributed",
    "taps": "sadp_bench.speed.taps",
}
"""``sadp-bench overhead NAME``: the module that measures it."""
DELEGATED: dict[tuple[str, ...], str] = {
    ("speed",): "sadp_bench.speed.core",
    **{("overhead", name): module for name, module in OVERHEAD.items()},
}
"""Subcommands whose options the measurement module parses itself."""


def _csv(kind: str, allowed: Sequence[str], cast: Any = str) -> Any:
    """An argparse type: a comma-separated list whose items must be in ``allowed``."""

    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["all"] and allowed:
            return list(allowed)
        values = []
        for item in items:
            if allowed and item not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {kind} {item!r}; choose from {', '.join(allowed)}")
            try:
                values.append(cast(item))
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad {kind} {item!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return values

    return parse


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError(text)
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=FASHION_MNIST_DIR, help="directory of the four idx files"
    )
    parser.add_argument(
        "--dataset", choices=["idx", "digits"], default="idx",
        help="'digits': scikit-learn's 8x8 digits instead (only when asked: a quick check)",
    )  # fmt: skip
    parser.add_argument("--train-size", type=int, default=None, help="fixed training subset (default: all)")
    parser.add_argument("--test-size", type=int, default=None, help="fixed test subset (default: all)")
    parser.add_argument(
        "--curve-test-size", type=int, default=None,
        help="test examples behind each per-epoch curve point (default: all; the final accuracy "
        "always uses the whole test set)",
    )  # fmt: skip


def _add_training_options(parser: argparse.ArgumentParser, epochs: int) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, cosine schedule over the epochs")
    parser.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP")
    parser.add_argument("--steps", type=int, default=4, help="time steps T")
    parser.add_argument(
        "--loss", choices=["rate", "mean"], default="rate",
        help="'rate': cross-entropy at every step, averaged (default); 'mean': of the time-mean output",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and XLA CPU threads (1: steadiest timing here)"
    )
    parser.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help="Pruner smoothing of every sadp and loss method (replaces theirs)",
    )
    parser.add_argument("--warmup-epochs", type=int, default=None, help="Pruner warm-up epochs (default 1)")
    parser.add_argument(
        "--anneal-fraction", type=float, default=None, help="Pruner annealing share of epochs (default 0.125)"
    )
    parser.add_argument(
        "--device", default="cpu",
        help="torch device of the snnTorch and SpikingJelly runs ('cuda': a GPU; default cpu); "
        "JAX runs use JAX's default device",
    )  # fmt: skip


def build_parser(prog: str = "sadp-bench") -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{main,run,probe,report,speed,overhead}"
    )

    main = commands.add_parser("main", help="the main job: full data vs SADP r=0.3 on Fashion-MNIST")
    _add_data_options(main)
    _add_training_options(main, epochs=8)
    main.add_argument("--framework", choices=FRAMEWORKS, default="snntorch")
    main.add_argument("--model", choices=MODELS, default="mlp")
    main.add_argument("--prune-ratio", type=_ratio, default=0.3)
    main.add_argument("--seed", type=int, default=0)
    main.add_argument("--out", type=Path, default=Path("results/main"))
    main.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")

    run = commands.add_parser("run", help="the grid of methods, ratios, seeds, models and frameworks")
    _add_data_options(run)
    _add_training_options(run, epochs=8)
    run.add_argument("--frameworks", type=_csv("framework", FRAMEWORKS), default=list(FRAMEWORKS))
    run.add_argument("--models", type=_csv("model", MODELS), default=list(MODELS))
    pruned = [m for m in METHODS if m != "full"]
    run.add_argument(
        "--methods", type=_csv("method", pruned), default=pruned,
        help=f"comma-separated, or 'all' ({', '.join(pruned)}); the full-data run is always included",
    )  # fmt: skip
    run.add_argument(
        "--conv-methods", type=_csv("method", pruned), default=None,
        help="methods for the conv model (default: --methods; the oracle is MLP only)",
    )  # fmt: skip
    run.add_argument("--ratios", type=_csv("pruning ratio", [], _ratio), default=[0.3, 0.5, 0.7])
    run.add_argument("--seeds", type=_csv("seed", [], int), default=[0, 1, 2])
    run.add_argument("--out", type=Path, default=Path("results/bench"))

    probe = commands.add_parser("probe", help="gradient-variance probe and bound quality on a checkpoint")
    _add_data_options(probe)
    _add_training_options(probe, epochs=3)
    probe.add_argument(
        "--frameworks", type=_csv("framework", TORCH_FRAMEWORKS), default=list(TORCH_FRAMEWORKS)
    )
    probe.add_argument("--models", type=_csv("model", MODELS), default=list(MODELS))
    probe.add_argument("--subset", type=int, default=2000, help="training examples the probes use")
    probe.add_argument("--draws", type=int, default=30, help="plans drawn per method (at least 20)")
    probe.add_argument("--ratio", type=_ratio, default=0.5)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--out", type=Path, default=Path("results/bench"))

    report = commands.add_parser("report", help="merge results and write docs/benchmarks.md and plots")
    report.add_argument(
        "--inputs", type=Path, nargs="+", default=[Path("docs/benchmarks")],
        help="directories holding results.json / meta.json / probes.json",
    )  # fmt: skip
    report.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="merged JSON and plots")
    report.add_argument("--markdown", type=Path, default=Path("docs/benchmarks.md"))

    ablation = commands.add_parser(
        "ablation", help="print a Markdown table of Δ vs full data, paired by seed, for one sweep"
    )
    ablation.add_argument(
        "--inputs", type=Path, nargs="+", required=True, help="directories holding results.json"
    )

    commands.add_parser(
        "speed", add_help=False, help="planning and update costs of the core (options: speed --help)"
    )
    overhead = commands.add_parser("overhead", help="cost per training step of the framework adapters")
    overhead.add_argument(
        "measure", choices=list(OVERHEAD),
        help="torch: snnTorch and SpikingJelly; jax: spyx; distributed: DDP, 2 processes under torchrun; "
        "taps: three ways of tracing a Linear readout (each takes --help)",
    )  # fmt: skip
    return parser


def machine() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    versions = {}
    for package in ("sadp-core", "torch", "snntorch", "spikingjelly", "numpy", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "processor": processor,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _load(args: argparse.Namespace) -> Any:
    from .data import load_data

    return load_data(args.dataset, args.data, args.train_size, args.test_size)


def _settings(args: argparse.Namespace) -> Any:
    from .train import Settings

    return Settings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, hidden=args.hidden,
        steps=args.steps, loss=args.loss, curve_test_size=args.curve_test_size, device=args.device,
        pruner=tuple(
            (name, getattr(args, name)) for name in ("smoothing", "warmup_epochs", "anneal_fraction")
            if getattr(args, name) is not None
        ),
    )  # fmt: skip


def _import_frameworks(frameworks: Sequence[str]) -> None:
    """Import the frameworks first: ``sadp_core.attach`` only looks at imported ones."""
    import importlib

    for name in frameworks:
        importlib.import_module("spikingjelly.activation_based" if name == "spikingjelly" else name)


def _xla_threads(threads: int) -> None:
    """XLA's CPU threads, before JAX is imported (``_import_frameworks``)."""
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        extra = "--xla_cpu_multi_thread_eigen=false " if threads == 1 else ""
        os.environ["XLA_FLAGS"] = f"{flags} {extra}intra_op_parallelism_threads={threads}".strip()


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def _equal_share_ratio(args: argparse.Namespace, size: int) -> float:
    """The ``fewer_epochs`` ratio whose whole epochs come closest to SADP's share of examples
    (at least one epoch fewer than ``--epochs``, at least one epoch)."""
    from sadp_core import Pruner

    pruner = Pruner(num_examples=size, prune_ratio=args.prune_ratio, epochs=args.epochs)
    share = float(pruner.stats.projected_fraction)
    epochs: int = args.epochs
    return 1 - max(1, min(epochs - 1, round(share * epochs))) / epochs


def command_main(args: argparse.Namespace) -> int:
    """Full data, SADP at ``--prune-ratio`` and full data for fewer epochs at SADP's share
    (interleaved by epoch); table, JSON, plot."""
    from tqdm import tqdm

    from .methods import supported
    from .report.plots import plot_main
    from .report.tables import main_table
    from .train import RunSpec, run_comparison

    if not supported(args.model, "sadp", args.framework):
        print(f"error: no {args.model} model for framework {args.framework}", file=sys.stderr)
        return 2
    data = _load(args)
    _import_frameworks([args.framework])
    fewer = _equal_share_ratio(args, len(data.train_y))
    specs = [
        RunSpec(args.framework, args.model, "full", 0.0, args.seed),
        RunSpec(args.framework, args.model, "sadp", args.prune_ratio, args.seed),
        RunSpec(args.framework, args.model, "fewer_epochs", fewer, args.seed),
    ]
    print(
        f"{data.name}: {len(data.train_y)} training and {len(data.test_y)} test examples; "
        f"{args.framework} {args.model}, T={args.steps}, {args.epochs} epochs: all data, SADP "
        f"r={args.prune_ratio}, and all data for fewer epochs at SADP's share; epochs interleaved (1 thread)"
    )
    records = run_comparison(specs, data, _settings(args), progress=not args.no_progress, log=tqdm.write)
    print(main_table(records))
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(
        args.out / "results.json",
        {"command": _command(python=False), "settings": _jsonable(vars(args)), "machine": machine(),
         "dataset": data.name, "runs": records},
    )  # fmt: skip
    plot_main(records, args.out / "accuracy_vs_time.png", title=f"{data.name}, {args.framework} {args.model}")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'accuracy_vs_time.png'}")
    return 0


def command_run(args: argparse.Namespace) -> int:
    """The grid, one comparison (framework, model, seed) at a time; JSON after each."""
    from .methods import supported
    from .train import RunSpec, run_comparison

    data = _load(args)
    _import_frameworks(args.frameworks)
    settings = _settings(args)
    records: list[dict[str, Any]] = []
    meta = {
        "command": _command(python=True),
        "machine": machine(),
        "dataset": data.name,
        "settings": _jsonable(vars(args)),
    }
    for model in args.models:
        methods = args.conv_methods if model == "conv" and args.conv_methods else args.methods
        for framework in args.frameworks:
            if not supported(model, "full", framework):
                print(f"note: no {model} model for {framework}: not run")
                continue
            skipped = [m for m in methods if not supported(model, m, framework)]
            if skipped:
                why = "not a JAX method" if framework == "jax" else "exact score: Linear layers only"
                print(f"note: {', '.join(skipped)} not run on {framework} {model} ({why})")
            for seed in args.seeds:
                specs = [RunSpec(framework, model, "full", 0.0, seed)] + [
                    RunSpec(framework, model, method, ratio, seed)
                    for method in methods
                    if supported(model, method, framework)
                    for ratio in args.ratios
                ]
                records += run_comparison(specs, data, settings, progress=False)
                _write_json(args.out / "results.json", records)
                _write_json(args.out / "meta.json", meta)
    print(f"wrote {len(records)} records to {args.out / 'results.json'}")
    return 0


def command_probe(args: argparse.Namespace) -> int:
    """Gradient-variance probe and bound quality for each (framework, model)."""
    from .probes import probe

    if args.draws < 20:
        raise SystemExit("error: --draws must be at least 20")
    data = _load(args)
    _import_frameworks(args.frameworks)
    results = {
        "command": _command(python=True),
        "machine": machine(),
        "dataset": data.name,
        "settings": _jsonable(vars(args)),
        "variance": [],
        "bound": [],
    }
    for model in args.models:
        for framework in args.frameworks:
            variance, bound = probe(
                framework, model, data, _settings(args), subset=args.subset, draws=args.draws,
                ratio=args.ratio, seed=args.seed,
            )  # fmt: skip
            results["variance"] += variance
            results["bound"] += bound
            _write_json(args.out / "probes.json", results)
    print(f"wrote {args.out / 'probes.json'}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    """Merge the inputs into ``--out`` and write the Markdown report and plots."""
    from .report.page import write_report

    write_report(args.inputs, args.out, args.markdown)
    print(f"wrote {args.markdown} and the plots in {args.out}")
    return 0


def command_ablation(args: argparse.Namespace) -> int:
    """Print the paired Δ of every method of one sweep (:func:`~sadp_bench.report.tables.ablation_table`)."""
    from .report.summary import merge
    from .report.tables import ablation_table

    records, _, _ = merge(args.inputs)
    if not records:
        raise SystemExit(f"error: no results.json with records in {', '.join(map(str, args.inputs))}")
    print(ablation_table(records))
    return 0


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}


def _command(python: bool) -> str:
    """The command line as typed: ``sadp-bench ...``, or ``[python] benchmarks/sadp_bench.py ...``."""
    argv = list(sys.argv)
    if Path(argv[0]).name in ("sadp-bench", "__main__.py"):
        return " ".join(["sadp-bench", *argv[1:]])
    return " ".join(["python", *argv] if python else argv)


def _delegate(argv: list[str], prog: str) -> int | None:
    """Run ``speed`` or ``overhead NAME`` with the rest of ``argv``; None if it is neither."""
    for words, module in DELEGATED.items():
        if tuple(argv[: len(words)]) == words:
            import importlib

            measure: Any = importlib.import_module(module).main
            return int(measure(argv[len(words) :], prog=" ".join([prog, *words])) or 0)
    return None


def _device_problem(torch: Any, device: str) -> str | None:
    """Why ``--device`` cannot be used here (None if it can)."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        return f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: torch sees no CUDA device here"
    return None


def main(argv: Sequence[str] | None = None, prog: str = "sadp-bench") -> int:
    """Parse the command line and run one subcommand; 2 on bad input or missing data."""
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _delegate(argv, prog)
    if delegated is not None:
        return delegated
    args = build_parser(prog).parse_args(argv)
    commands = {
        "main": command_main, "run": command_run, "probe": command_probe, "report": command_report,
        "ablation": command_ablation,
    }  # fmt: skip
    try:
        if args.command not in ("report", "ablation"):
            import torch

            torch.set_num_threads(args.threads)
            _xla_threads(args.threads)
            problem = _device_problem(torch, args.device)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 2
            for name in ("train_size", "test_size", "curve_test_size", "epochs", "batch_size", "steps"):
                value = getattr(args, name, None)
                if value is not None and value < 1:
                    print(
                        f"error: --{name.replace('_', '-')} must be at least 1, got {value}", file=sys.stderr
                    )
                    return 2
        return commands[args.command](args)
    except SADPError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MissingData as error:
        print(f"error: {error}\n{GET_DATA}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(
            f"error: {error}. The benchmark needs torch, snntorch, spikingjelly, tqdm and matplotlib "
            '(pip install "sadp-core[bench,snntorch,spikingjelly]" torch==2.13.0), and for '
            '--frameworks jax also jax, flax, optax and spyx (pip install "sadp-core[bench,spyx]")',
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())

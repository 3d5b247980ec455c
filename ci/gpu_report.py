"""The report of ``ci/gpu-check``: gather its pieces into one JSON file, check it, and turn it
into a Markdown section of ``docs/benchmarks.md``.

    python ci/gpu_report.py env --out WORK/env.json          # device and versions (imports torch, jax)
    python ci/gpu_report.py assemble --work WORK --out OUT/gpu.json [--dry-run]
    python ci/gpu_report.py validate OUT/gpu.json             # exit 1 if the schema is off
    python ci/gpu_report.py markdown OUT/gpu.json [--into docs/benchmarks.md]

``assemble`` reads what the stages of ``ci/gpu-check`` left in WORK: ``stages.tsv`` (name,
exit code or ``skipped``, seconds), ``env.json``, ``tests-*.xml`` (pytest's JUnit XML),
``overhead-torch.json`` and ``overhead-jax.json`` (``sadp-bench overhead ... --json``) and
``main-*/results.json`` (``sadp-bench main``). A stage that failed or ran out of time
leaves its piece out: the report says so instead of inventing it.

Only the ``env`` command imports torch and jax; the others need the standard library alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
PACKAGES = (
    "torch", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "numpy",
    "snntorch", "spikingjelly", "spyx", "array-api-compat", "array-api-strict", "pytest", "hypothesis",
)  # fmt: skip
TEST_SESSIONS = ("tests_gpu", "tests_core_torch", "tests_core_jax")
MAIN_FRAMEWORKS = ("snntorch", "spikingjelly", "jax")
MAIN_FIELDS = (
    "method", "prune_ratio", "test_accuracy", "train_wall_s", "processed_fraction", "speedup",
    "theoretical_speedup", "speedup_over_max", "run_epochs", "epochs", "cuda_syncs", "cuda_sync_steps",
)  # fmt: skip
MAIN_HEADER = [
    "run",
    "test acc",
    "train s",
    "share",
    "speedup",
    "max",
    "host syncs / epoch",
    "steps with one",
]
BEGIN, END = "<!-- gpu-check: begin -->", "<!-- gpu-check: end -->"
"""The markers around the generated section of ``docs/benchmarks.md``."""


class ReportError(ValueError):
    """A piece of the report is missing or malformed."""


# -- the pieces ---------------------------------------------------------------------------


def read_stages(path: Path) -> dict[str, dict[str, Any]]:
    """``stages.tsv`` -> {stage: {"exit_code": int or None, "status", "seconds"}}.

    Each line is ``name<TAB>exit code<TAB>seconds``; an exit code ``skipped`` means that the
    stage did not run (out of time); 124 and 137 mean that it ran out of its time.
    """
    if not path.exists():
        raise ReportError(f"{path} is missing: it is written by ci/gpu-check as its stages run")
    stages = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ReportError(f"{path}:{number}: expected 'name<TAB>exit code<TAB>seconds', got {line!r}")
        name, code, seconds = fields
        try:
            exit_code = None if code == "skipped" else int(code)
            elapsed = float(seconds)
        except ValueError:
            raise ReportError(f"{path}:{number}: bad exit code or seconds in {line!r}") from None
        status = "skipped" if exit_code is None else stage_status(exit_code)
        stages[name] = {"exit_code": exit_code, "status": status, "seconds": elapsed}
    return stages


def stage_status(exit_code: int) -> str:
    """'ok', 'no tests' (pytest's 5: nothing selected), 'timed out' (``timeout``'s 124, or 137
    when it had to kill) or 'failed'."""
    if exit_code == 0:
        return "ok"
    if exit_code == 5:
        return "no tests"
    return "timed out" if exit_code in (124, 137) else "failed"


def pytest_counts(path: Path) -> dict[str, int]:
    """Passed, failed (failures and errors), errors and skipped tests of a JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: its pytest run did not finish") from None
    except ET.ParseError as error:
        raise ReportError(f"{path} is not JUnit XML: {error}") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise ReportError(f"{path} holds no <testsuite>")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            try:
                totals[key] += int(suite.get(key, "0"))
            except ValueError:
                raise ReportError(f"{path}: attribute {key}={suite.get(key)!r} is not a count") from None
    failed = totals["failures"] + totals["errors"]
    passed = totals["tests"] - failed - totals["skipped"]
    return {"passed": passed, "failed": failed, "errors": totals["errors"], "skipped": totals["skipped"]}


def overhead_ratios(work: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``overhead_<network>`` ratios (attached / plain step) and the step times behind them."""
    ratios: dict[str, float] = {}
    times: dict[str, dict[str, float]] = {}
    pieces = (("overhead-torch.json", "network"), ("overhead-jax.json", "score"))
    for name, column in pieces:
        path = work / name
        if not path.exists():
            continue
        data = _json(path)
        prefix = "overhead_jax_" if column == "score" else "overhead_"
        for row in data.get("rows", []):
            key = prefix + str(row[column]).replace("-", "_")
            ratios[key] = float(row["ratio"])
            times[key] = {"plain_ms": float(row["plain_ms"]), "attached_ms": float(row["attached_ms"])}
    return ratios, times


def main_runs(work: Path) -> dict[str, list[dict[str, Any]]]:
    """Per framework, the runs of ``sadp-bench main`` (full, SADP, fewer epochs), summarised."""
    runs = {}
    for framework in MAIN_FRAMEWORKS:
        path = work / f"main-{framework}" / "results.json"
        if path.exists():
            records = _json(path).get("runs", [])
            runs[framework] = [{key: record.get(key) for key in MAIN_FIELDS} for record in records]
    return runs


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path} is not JSON: {error}") from None


# -- the environment (the only part that imports torch and jax) ----------------------------


def nvidia_smi() -> dict[str, Any] | None:
    """Name, driver and memory of the first GPU as the driver reports them; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]
    try:
        line = subprocess.run(query, capture_output=True, text=True, check=True, timeout=60).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    name, driver, memory = (field.strip() for field in line.splitlines()[0].split(","))
    return {"name": name, "driver": driver, "memory_mib": int(float(memory)), "source": "nvidia-smi"}


def environment() -> dict[str, Any]:
    """The device (as nvidia-smi reports it, else the processor), package versions, and what
    torch and jax see."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    device = nvidia_smi() or {"name": platform.processor() or platform.machine(), "source": "no GPU"}
    seen: dict[str, Any] = {}
    try:
        import torch

        seen["torch_cuda"] = torch.version.cuda
        seen["torch_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError as error:
        seen["torch_error"] = str(error)
    try:
        import jax

        seen["jax_devices"] = [f"{d.platform}: {d.device_kind}" for d in jax.devices()]
    except (ImportError, RuntimeError) as error:
        seen["jax_error"] = str(error)
    return {"device": device, "versions": versions, "seen": seen}


# -- the report ---------------------------------------------------------------------------


def assemble(work: Path, dry_run: bool = False) -> dict[str, Any]:
    """The report from the pieces in ``work`` (see the module docstring)."""
    stages = read_stages(work / "stages.tsv")
    env = _json(work / "env.json") if (work / "env.json").exists() else {}
    sessions = {}
    for name in TEST_SESSIONS:
        stage = stages.get(name, {"exit_code": None, "status": "not run", "seconds": 0.0})
        try:
            counts = pytest_counts(work / f"{name.replace('_', '-')}.xml")
        except ReportError:
            counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        sessions[name] = {**counts, **stage}
    ratios, times = overhead_ratios(work)
    return {
        "schema": SCHEMA,
        "dry_run": dry_run,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": env.get("device", {"name": "unknown", "source": "env stage did not run"}),
        "versions": env.get("versions", {}),
        "seen": env.get("seen", {}),
        "stages": stages,
        "sessions": sessions,
        **ratios,
        "step_times_ms": times,
        "main": main_runs(work),
        "total_seconds": sum(stage["seconds"] for stage in stages.values()),
    }


def validate(report: Any) -> list[str]:
    """What is wrong with a report's schema (an empty list when nothing is)."""
    if not isinstance(report, dict):
        return [f"the report is a {type(report).__name__}, not an object"]
    problems = []
    for key, kind in (("schema", int), ("dry_run", bool), ("device", dict), ("versions", dict),
                      ("stages", dict), ("sessions", dict), ("main", dict)):  # fmt: skip
        if not isinstance(report.get(key), kind):
            problems.append(f"{key!r} is missing or not {kind.__name__}")
    if problems:
        return problems
    if report["schema"] != SCHEMA:
        problems.append(f"schema {report['schema']} is not {SCHEMA}")
    if not isinstance(report["device"].get("name"), str) or not report["device"]["name"]:
        problems.append("device has no name")
    for name in TEST_SESSIONS:
        session = report["sessions"].get(name)
        if not isinstance(session, dict):
            problems.append(f"session {name!r} is missing")
            continue
        for count in ("passed", "failed"):
            value = session.get(count)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"session {name!r}: {count!r} is not a count")
    for key, value in report.items():
        if key.startswith("overhead") and (not isinstance(value, float) or not value > 0):
            problems.append(f"{key!r} is not a positive ratio: {value!r}")
    return problems


def markdown(report: dict[str, Any]) -> str:
    """The section of ``docs/benchmarks.md`` (between :data:`BEGIN` and :data:`END`)."""
    device, versions = report["device"], report["versions"]
    kind = "a dry run on the CPU (sizes too small to mean anything)" if report["dry_run"] else "one run"
    driver = f", driver {device['driver']}" if "driver" in device else ""
    packages = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
    lines = [
        BEGIN,
        "## On a GPU (`ci/gpu-check`)",
        "",
        f"{device['name']} ({device.get('source', '')}{driver}), {report['date']}, {kind}. {packages}.",
        "",
        *_table(
            ["test session", "passed", "failed", "skipped", "status", "s"],
            [[name, s["passed"], s["failed"], s["skipped"], s["status"], f"{s['seconds']:.0f}"]
             for name, s in report["sessions"].items()],
        ),
    ]  # fmt: skip
    ratios = {key: value for key, value in report.items() if key.startswith("overhead")}
    if ratios:
        times = report.get("step_times_ms", {})
        rows = [
            [key[len("overhead_") :], _number(times.get(key, {}).get("plain_ms"), "{:.2f}"),
             _number(times.get(key, {}).get("attached_ms"), "{:.2f}"), f"{ratio:.3f}"]
            for key, ratio in ratios.items()
        ]  # fmt: skip
        lines += ["", "Cost of the taps per step (median attached / plain; interleaved, synchronised):", ""]
        lines += _table(["step", "plain ms", "attached ms", "ratio"], rows)
    for framework, runs in report["main"].items():
        lines += ["", f"Main job, {framework} (`sadp-bench main`):", ""]
        lines += _table(MAIN_HEADER, [_main_row(run) for run in runs])
    stages = report["stages"].items()
    unfinished = [f"{name} ({stage['status']})" for name, stage in stages if stage["status"] != "ok"]
    if unfinished:
        lines += ["", "Stages that did not pass: " + ", ".join(unfinished) + "."]
    return "\n".join([*lines, END]) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _number(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _main_row(run: dict[str, Any]) -> list[str]:
    label = f"{run['method']} r={run['prune_ratio']:.2f}"
    if run["method"] in ("full", "fewer_epochs"):
        label = f"all data, {run['run_epochs']} epochs"

    def per_epoch(values: Any) -> str:
        return "-" if not values else f"{sum(values) / len(values):.1f}"

    return [
        label, _number(run["test_accuracy"], "{:.2%}"), _number(run["train_wall_s"], "{:.1f}"),
        _number(run["processed_fraction"], "{:.3f}"), _number(run.get("speedup"), "{:.2f}x"),
        _number(run["theoretical_speedup"], "{:.2f}x"), per_epoch(run["cuda_syncs"]),
        per_epoch(run["cuda_sync_steps"]),
    ]  # fmt: skip


def insert_section(page: str, section: str) -> str:
    """``page`` with its section between the markers replaced (appended if it has none)."""
    if (BEGIN in page) != (END in page):
        raise ReportError(f"the page has only one of the markers {BEGIN!r} and {END!r}")
    if BEGIN not in page:
        return page.rstrip("\n") + "\n\n" + section
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + section.rstrip("\n") + tail


# -- the command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run one command; 1 when the report is malformed, 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="device and versions as JSON")
    env.add_argument("--out", type=Path, required=True)
    assemble_ = commands.add_parser("assemble", help="the report from ci/gpu-check's work folder")
    assemble_.add_argument("--work", type=Path, required=True)
    assemble_.add_argument("--out", type=Path, required=True)
    assemble_.add_argument("--dry-run", action="store_true")
    check = commands.add_parser("validate", help="check a report's schema")
    check.add_argument("report", type=Path)
    page = commands.add_parser("markdown", help="the docs/benchmarks.md section of a report")
    page.add_argument("report", type=Path)
    page.add_argument("--into", type=Path, default=None, help="replace (or append) the section in this page")
    args = parser.parse_args(argv)
    try:
        if args.command == "env":
            args.out.write_text(json.dumps(environment(), indent=1))
            return 0
        if args.command == "assemble":
            assembled = assemble(args.work, args.dry_run)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(assembled, indent=1))
            return 1 if validate(assembled) else 0
        if not args.report.exists():
            raise ReportError(f"{args.report} does not exist")
        report = _json(args.report)
        problems = validate(report)
        if problems:
            print(f"{args.report}: " + "; ".join(problems), file=sys.stderr)
            return 1
        if args.command == "markdown":
            section = markdown(report)
            if args.into is None:
                print(section, end="")
            else:
                args.into.write_text(insert_section(args.into.read_text(), section))
                print(f"wrote the section into {args.into}")
        return 0
    except (ReportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

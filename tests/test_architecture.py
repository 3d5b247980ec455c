"""The shape of the code (``docs/architecture.md``): no import circles, and each room imports
only the rooms below it.

The import graph is read from the source with ``ast``: every ``import`` and ``from ...
import`` statement of a module, wherever it stands (inside functions and ``if
TYPE_CHECKING:`` blocks too: a circle that only type checking closes is still a circle for
a reader), relative imports resolved against the module's package. Only the project's own
modules are nodes. Importing ``a.b`` runs ``a/__init__.py`` first, but that implicit edge is
not counted: a package that re-exports its modules would otherwise be a circle with each.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {
    "sadp_core": ROOT / "sadp_core",
    "sadp_core.adapters": ROOT / "adapters",
    "sadp_bench": ROOT / "sadp_bench",
}
"""Package name -> its folder (the adapters are installed as ``sadp_core.adapters``)."""


def modules_of(rooms: Mapping[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under each package folder."""
    found = {}
    for package, folder in rooms.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (None: not the project's)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The project modules that ``module`` (the file ``path``) imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: Iterable[str] = ()
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):
                    raise ValueError(f"{path}: relative import beyond the top-level package")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # "from pkg import name": the module pkg.name if there is one, else pkg itself
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        for name in names:
            target = _known(name, modules)
            if target is not None:
                targets.add(target)
    return targets


def import_graph(rooms: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = modules_of(rooms)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module, and modules
    that import themselves (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def test_the_project_has_no_import_circles() -> None:
    graph = import_graph(ROOMS)
    assert {"sadp_core", "sadp_core.adapters._torch", "sadp_bench.cli", "sadp_bench.report.page"} <= set(
        graph
    )
    assert cycles(graph) == [], "import circles (each line: modules that import each other): " + "; ".join(
        " <-> ".join(component) for component in cycles(graph)
    )


def test_each_room_imports_only_the_rooms_below_it() -> None:
    """The core imports neither the adapters (``attach`` finds them by name, at run time) nor
    the benchmark; the adapters do not import the benchmark."""
    wrong = []
    for module, targets in import_graph(ROOMS).items():
        for target in targets:
            in_core = module.startswith("sadp_core") and not module.startswith("sadp_core.adapters")
            if in_core and target.startswith(("sadp_core.adapters", "sadp_bench")):
                wrong.append(f"{module} -> {target}")
            if module.startswith("sadp_core.adapters") and target.startswith("sadp_bench"):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def _write(folder: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_is_found_through_relative_function_and_type_checking_imports(tmp_path: Path) -> None:
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from .a import f\n",
            "a.py": "from . import b\n\ndef f():\n    return b\n",
            "b.py": "def g():\n    from .sub.c import h\n    return h\n",
            "sub/__init__.py": "",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n",
            "d.py": "import pkg.a\nimport os\n",
            "e.py": "from pkg import e\n",
        },
    )
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.d"] == {"pkg.a"} and graph["pkg"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.e"]]


def test_no_circle_is_found_where_there_is_none(tmp_path: Path) -> None:
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from .a import f\nfrom .b import g\n",
            "a.py": "from .b import g\n",
            "b.py": "import json\n",
        },
    )
    assert cycles(import_graph({"pkg": tmp_path / "pkg"})) == []


LIGHT = """
import sys
import sadp_bench, sadp_bench.cli, sadp_bench.methods, sadp_bench.models, sadp_bench.data
import sadp_bench.report.page, sadp_bench.speed.core
sadp_bench.cli.build_parser().parse_args(["run", "--methods", "all"])
print(",".join(sorted(name for name in ("torch", "jax", "flax", "spyx") if name in sys.modules)) or "none")
"""


def test_the_command_line_and_the_report_import_neither_torch_nor_jax() -> None:
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_torch_runs_never_import_jax() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tqdm")
    code = (
        "import sys, sadp_bench.train, sadp_bench.train.torch, sadp_bench.probes; print('jax' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"

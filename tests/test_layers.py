"""The package's layers: no module imports from a higher layer (lazy imports inside functions included), and the
import graph between modules has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import mdsrec

ROOT = Path(mdsrec.__file__).parent
# Lower to higher; a module may import from its own layer and the ones before it.
LAYERS = (
    (
        "core",
        ("mdsrec", "mdsrec.config", "mdsrec.errors", "mdsrec.atomic", "mdsrec.rundir", "mdsrec.distributed"),
    ),
    ("data", ("mdsrec.data",)),
    ("models", ("mdsrec.models",)),
    ("evaluation", ("mdsrec.evaluation",)),
    ("training", ("mdsrec.training",)),
    ("studies", ("mdsrec.studies",)),
    ("applications", ("mdsrec.serving", "mdsrec.explain")),
    ("cli", ("mdsrec.cli", "mdsrec.cli_reference", "mdsrec.__main__")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, rank = "", -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def imports() -> dict[str, set[str]]:
    """module -> the mdsrec modules it imports (``from mdsrec.x import y`` counts as mdsrec.x, or mdsrec.x.y when
    that is a module)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "mdsrec":
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "mdsrec"}
        graph[name] = found - {name}
    return graph


def test_no_import_runs_from_a_lower_layer_to_a_higher_one() -> None:
    graph = imports()
    assert len(graph) > 40  # the walk found the package
    upward = [
        f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:  # a package's __init__ re-export resolves to the package itself
                continue
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state:
                found = visit(nxt, [*path, node])
                if found:
                    return found
        state[node] = 2
        return None

    cycles = [c for n in sorted(graph) if n not in state and (c := visit(n, []))]
    assert cycles == []

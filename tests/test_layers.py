"""The package's layers, read from its own source: every `import` and `from ... import` of every module in
ssl_ray/ (also those inside functions and under `if TYPE_CHECKING:`; relative imports resolved), checked for
an import from a lower layer to a higher one and for import cycles between modules.

Layers, low to high (a module may import its own layer and those below; two packages of one layer may import
each other, but never in a circle):

    0  errors, config, processes           plain Python: errors, hyperparameter dataclasses, process checks
    1  nn, data, models                    torch helpers for the methods, datasets and splits, networks
    2  methods                             the SSL methods (losses, players, steps)
    3  engine                              the loop that drives a method, checkpoints, logging
    4  tuning, export                      Ray Train/Tune (the only Ray), model export
    5  cli                                 the command line

The root `ssl_ray/__init__.py` (its version only) is layer 0. A new top-level module or package fails the
test until it is given a layer here.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

LAYERS = {
    "": 0, "errors": 0, "config": 0, "processes": 0,
    "nn": 1, "data": 1, "models": 1,
    "methods": 2,
    "engine": 3,
    "tuning": 4, "export": 4,
    "cli": 5,
}

# Known upward imports, each with its reason (none today: the helpers methods/ used from engine/ moved to
# ssl_ray/nn/). An entry that no longer occurs fails the test, so the list cannot outlive the imports it excuses.
ALLOWED_UPWARD: set[tuple[str, str]] = set()

IMPORT_SYSTEM_NAMES = {"__path__", "__file__", "__name__", "__spec__", "__package__", "__loader__"}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Edge:
    importer: str  # dotted module name
    imported: str
    path: str  # the importer's file, relative to the root
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(root: Path, package: str) -> tuple[set[str], list[Edge]]:
    """Every module of `package` (a folder under `root`) and every import between two of them.

    `from X import name` is an edge to X.name when that is a module of the package, else to X; an import of a
    name below a module (`import pkg.mod.attr`) is an edge to the module. One edge per importer, imported
    module and line."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[tuple[str, str, int], Edge] = {}
    for mod, path in files.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]  # the importer's package
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: `.` is the importer's package, each further dot one package up
                    base = here[:len(here) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # the attributes the import system sets on a module exist before its code runs: no dependency
                targets = [f"{prefix}.{a.name}" for a in node.names if a.name not in IMPORT_SYSTEM_NAMES]
            else:
                continue
            for t in targets:
                imported = resolve(t)
                if imported is not None and imported != mod:
                    edges[mod, imported, node.lineno] = Edge(mod, imported, str(path.relative_to(root)), node.lineno)
    return set(files), list(edges.values())


def layer_of(module: str, layers: dict[str, int]) -> tuple[str, int | None]:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    return key, layers.get(key)


def upward_imports(modules: set[str], edges: list[Edge], layers: dict[str, int]) -> tuple[list[str], list[Edge]]:
    """(modules without a layer, imports from a lower layer to a higher one)."""
    unplaced = sorted({m for m in modules if layer_of(m, layers)[1] is None})
    up = []
    for e in edges:
        low, high = layer_of(e.importer, layers)[1], layer_of(e.imported, layers)[1]
        if low is not None and high is not None and low < high:
            up.append(e)
    return unplaced, up


def import_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """The strongly connected components of more than one module (Tarjan), each as the edges inside it."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [sorted((e for e in edges if e.importer in c and e.imported in c), key=lambda e: (e.path, e.line))
            for c in components]


def check(root: Path, package: str, layers: dict[str, int],
          allowed: Collection[tuple[str, str]] = ()) -> list[str]:
    """Every problem, one readable line each ([] when the layers hold)."""
    modules, edges = read_imports(root, package)
    unplaced, up = upward_imports(modules, edges, layers)
    problems = [f"{m}: no layer (add {layer_of(m, layers)[0]!r} to LAYERS in tests/test_layers.py)"
                for m in unplaced]
    for e in up:
        if (e.importer, e.imported) not in allowed:
            (a, la), (b, lb) = layer_of(e.importer, layers), layer_of(e.imported, layers)
            problems.append(f"upward import: {e}  ({a}, layer {la} -> {b}, layer {lb})")
    for cycle in import_cycles(edges):
        problems.append("import cycle: " + "; ".join(map(str, cycle)))
    used = {(e.importer, e.imported) for e in up}
    for pair in sorted(set(allowed) - used):
        problems.append(f"allowed upward import {pair[0]} -> {pair[1]} no longer occurs: remove it from the "
                        f"allow-list")
    return problems


def test_ssl_ray_layers_hold():
    problems = check(ROOT, "ssl_ray", LAYERS, ALLOWED_UPWARD)
    assert not problems, "\n" + "\n".join(problems)


def test_reads_the_layers_of_the_real_package():
    """The reader finds what is known to be there (a reader that saw nothing would pass the test above)."""
    modules, edges = read_imports(ROOT, "ssl_ray")
    assert {"ssl_ray.cli", "ssl_ray.tuning.tune", "ssl_ray.methods.base", "ssl_ray.errors"} <= modules
    pairs = {(e.importer, e.imported) for e in edges}
    assert ("ssl_ray.engine.spec", "ssl_ray.methods") in pairs  # `from ..methods import ...`: the package
    assert ("ssl_ray.tuning.trial", "ssl_ray.engine.worker") in pairs  # `from ..engine.worker import ...`
    assert any(i == "ssl_ray.cli" and t.startswith("ssl_ray.tuning.") for i, t in pairs)  # inside functions


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_reports_a_cycle_and_an_upward_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/low/__init__.py": "from .a import f\n",
        "pkg/low/a.py": "import os\nfrom ..errors import E\n\ndef f():\n    from ..high import g  # upward\n",
        "pkg/high.py": "from pkg.low import a\nfrom . import errors\n",
        "pkg/ring/__init__.py": "",
        "pkg/ring/x.py": "from . import y\n",
        "pkg/ring/y.py": "from .z import h\n",
        "pkg/ring/z.py": "import pkg.ring.x\n",
    })
    layers = {"": 0, "errors": 0, "low": 1, "ring": 1, "high": 2}
    problems = check(tmp_path, "pkg", layers)
    text = "\n".join(problems)
    assert "upward import: pkg/low/a.py:5: pkg.low.a -> pkg.high  (low, layer 1 -> high, layer 2)" in problems, text
    ring = [p for p in problems if "pkg.ring" in p]
    assert ring == ["import cycle: pkg/ring/x.py:1: pkg.ring.x -> pkg.ring.y; pkg/ring/y.py:1: pkg.ring.y -> "
                    "pkg.ring.z; pkg/ring/z.py:1: pkg.ring.z -> pkg.ring.x"], text
    # the upward import also closes a circle low.a -> high -> low.a, reported with its lines
    assert "import cycle: pkg/high.py:1: pkg.high -> pkg.low.a; pkg/low/a.py:5: pkg.low.a -> pkg.high" in problems
    assert len(problems) == 3, text
    # allowed, the upward import is no longer reported; an allowance nothing uses is
    allowed = {("pkg.low.a", "pkg.high"), ("pkg.low.a", "pkg.ring.x")}
    problems = check(tmp_path, "pkg", layers, allowed)
    assert not any(p.startswith("upward import") for p in problems)
    assert "allowed upward import pkg.low.a -> pkg.ring.x no longer occurs: remove it from the allow-list" in problems
    # a package without a layer
    del layers["ring"]
    assert "pkg.ring.x: no layer (add 'ring' to LAYERS in tests/test_layers.py)" in check(tmp_path, "pkg", layers)

"""The walls of the house, read from the source (nothing is imported or run): the floors below tuning/ know nothing
of Ray, the methods know nothing of the training loop, the torch helpers (nn/) nothing of the datasets, and the
registry's list of modules that are not methods names modules that exist."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ssl_ray"


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at `path` (under `root`), those inside functions
    and under `if TYPE_CHECKING:` too; relative imports resolved."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    here = parts if parts[-1] == "__init__" else parts[:-1]
    here = [p for p in here if p != "__init__"]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out += [(node.lineno, prefix)] + [(node.lineno, f"{prefix}.{a.name}") for a in node.names]
    return out


def forbidden_imports(folders: list[str], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """'file:line: module' for every import, in the given folders of root/ssl_ray/, of a module in `forbidden` (a
    name or a package prefix)."""
    bad = []
    for folder in folders:
        for path in sorted((root / "ssl_ray" / folder).rglob("*.py")):
            for line, mod in imports_of(path, root):
                if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                    bad.append(f"{path.relative_to(root)}:{line}: {mod}")
    return sorted(set(bad))


LOWER_FLOORS = ["methods", "engine", "data", "nn", "models"]


def test_the_floors_below_tuning_import_neither_ray_nor_tuning():
    bad = forbidden_imports(LOWER_FLOORS, ("ray", "ssl_ray.tuning"))
    assert not bad, "\n" + "\n".join(bad)


def test_methods_do_not_import_the_engine():
    bad = forbidden_imports(["methods"], ("ssl_ray.engine",))
    assert not bad, "\n" + "\n".join(bad)


def test_nn_does_not_import_the_data_layer():
    """nn/ (torch helpers) sits below data/ (which uses nn.devices): an import back would tie the two in a loop."""
    bad = forbidden_imports(["nn"], ("ssl_ray.data",))
    assert not bad, "\n" + "\n".join(bad)


@pytest.mark.parametrize("source, hit", [
    ("import ray\n", "ray"), ("from ray.tune import Tuner\n", "ray.tune"),
    ("def f():\n    from ..tuning import tune\n", "ssl_ray.tuning"), ("import ray.train as t\n", "ray.train"),
])
def test_the_reader_sees_every_kind_of_import(tmp_path, source, hit):
    """A reader that missed an import would pass the tests above; this one finds each form (also inside a
    function, and relative), and not a module whose name only starts like a forbidden one."""
    folder = tmp_path / "ssl_ray" / "methods"
    folder.mkdir(parents=True)
    (folder / "x.py").write_text(source + "import rayon\nfrom ..tuningfork import x\n")
    found = forbidden_imports(["methods"], ("ray", "ssl_ray.tuning"), root=tmp_path)
    assert f"ssl_ray/methods/x.py:{source.count(chr(10))}: {hit}" in found, found
    assert not any("rayon" in f or "tuningfork" in f for f in found), found


def test_the_registry_skips_only_modules_that_exist():
    """`_NOT_METHODS` lists the modules of ssl_ray/methods/ the registry does not import as methods: each exists."""
    from ssl_ray.methods.registry import _NOT_METHODS

    modules = {p.stem for p in (PKG / "methods").glob("*.py")}
    assert _NOT_METHODS <= modules, sorted(_NOT_METHODS - modules)


# ---- sizes: no file over MAX_FILE_LINES lines, no function over MAX_FUNCTION_LINES --------------------------------
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80
KNOWN_LARGE: dict[str, str] = {}
"""Files and functions still over the limits, each with who is on it. An entry that is no longer over fails
test_known_large_entries_are_still_large: the list cannot outlive what it excuses."""


def oversized(root: Path = ROOT) -> dict[str, int]:
    """{'path': lines} for every file of root/ssl_ray over MAX_FILE_LINES, {'path:function': lines} for every
    function (a method as Class.method) over MAX_FUNCTION_LINES."""
    out: dict[str, int] = {}
    for path in sorted((root / "ssl_ray").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(root))
        if len(text.splitlines()) > MAX_FILE_LINES:
            out[rel] = len(text.splitlines())

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        lines = (child.end_lineno or child.lineno) - child.lineno + 1
                        if lines > MAX_FUNCTION_LINES:
                            out[f"{rel}:{name}"] = lines
                    visit(child, f"{name}.")

        visit(ast.parse(text, rel), "")
    return out


def test_no_file_or_function_is_over_the_limits():
    assert {k: v for k, v in oversized().items() if k not in KNOWN_LARGE} == {}


def test_known_large_entries_are_still_large():
    big = oversized()
    assert [k for k in KNOWN_LARGE if k not in big] == [], "remove these entries from KNOWN_LARGE: they are fixed"


def test_the_size_reader_sees_long_files_and_functions(tmp_path):
    pkg = tmp_path / "ssl_ray"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (pkg / "a.py").write_text("class C:\n    def long(self):\n" + body.replace("    ", "        ") + "\n\ndef short():\n"
                              "    return 1\n" + "\n" * MAX_FILE_LINES)
    found = oversized(tmp_path)
    assert found.keys() == {"ssl_ray/a.py", "ssl_ray/a.py:C.long"}, found
    assert found["ssl_ray/a.py:C.long"] == MAX_FUNCTION_LINES + 1

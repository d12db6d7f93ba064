"""The layer rules, checked on the source tree itself (docs/design/layers.md, STYLE.md).

core <- aio <- app: `aiodicom.core` is sans-I/O (stdlib + pydicom, no asyncio, ssl, socket,
selectors, time); aio may import core, never app; nothing in src imports tests; the modules
of `aiodicom.aio` import each other without a cycle; no module is over 600 lines. Every
`import` node counts, wherever it sits: module level, under `if TYPE_CHECKING:` or inside a
function, because a lazy import still ties the layers together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aiodicom"
MAX_LINES = 600
FORBIDDEN_IN_CORE = {
    "asyncio",
    "ssl",
    "socket",
    "select",
    "selectors",
    "time",
    "threading",
    "uvloop",
}
"""Top-level modules the sans-I/O core must not import (the clock is a `now` argument)."""
NOT_LOADED_BY_CORE = ("asyncio", "ssl", "socket", "selectors")
"""What `import aiodicom.core` must leave out of sys.modules (time is loaded by the interpreter)."""
CORE_THIRD_PARTY = {"pydicom"}
"""The only non-stdlib distribution core may import (lazily: pydicom itself loads ssl)."""
FACADES = {"aiodicom", "aiodicom.__main__"}
"""The package facade and `python -m aiodicom` sit above every layer and may import any."""
BASE = {"aiodicom.errors", "aiodicom.settings"}
"""Shared by every layer, so held to the core's rules."""

LAYER_RANK = {"core": 0, "aio": 1, "app": 2}


def _facade_homes() -> dict[str, str]:
    """The facade's lazy names -> their home modules, so that `from aiodicom import Server`
    counts as importing aiodicom.aio.server (importing the facade itself loads nothing)."""
    import aiodicom

    return dict(aiodicom._LAZY)


_FACADE_HOMES = _facade_homes()


def _module_name(path: Path) -> str:
    parts = ["aiodicom", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


ALL_FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module_name(p): p for p in ALL_FILES}
CORE_FILES = [p for p in ALL_FILES if _module_name(p).startswith("aiodicom.core")]
SANS_IO_FILES = CORE_FILES + [MODULES[m] for m in sorted(BASE)]
AIO = {name: path for name, path in MODULES.items() if name.startswith("aiodicom.aio.")}


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, resolved to an absolute dotted name, and where it was imported."""

    target: str
    line: int
    where: str
    """'module level', 'TYPE_CHECKING' or 'in <function>'."""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _contexts(tree: ast.Module) -> dict[ast.AST, str]:
    """Every import node of the file -> where it sits (the whole AST, nested ones included)."""
    found: dict[ast.AST, str] = {}

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = f"in {getattr(child, 'name', 'lambda')}()"
            if isinstance(child, ast.Import | ast.ImportFrom):
                found[child] = where
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "TYPE_CHECKING" if where == "module level" else where)
                for stmt in child.orelse:
                    visit_stmt(stmt, where)
                continue
            visit(child, inner)

    def visit_stmt(stmt: ast.stmt, where: str) -> None:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            found[stmt] = where
        else:
            wrapper = ast.Module(body=[stmt], type_ignores=[])
            visit(wrapper, where)

    visit(tree, "module level")
    return found


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path) -> list[Import]:
    """Every module `path` imports, anywhere in the file; relative imports resolved.

    `from pkg import name` counts as importing `pkg.name` when that is a module of ours.
    """
    return _imports_in(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> list[Import]:
    tree = ast.parse(source)
    found: list[Import] = []
    for node, where in _contexts(tree).items():
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, where) for alias in node.names)
            continue
        assert isinstance(node, ast.ImportFrom)
        base = _resolve_from(module, is_package, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:
                target = sub
            elif base == "aiodicom" and alias.name in _FACADE_HOMES:
                target = _FACADE_HOMES[alias.name]  # a lazy re-export: count its home
            else:
                target = base
            found.append(Import(target, node.lineno, where))
    return sorted(found, key=lambda imp: imp.line)


def test_imports_are_found_everywhere_and_resolved() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import asyncio\n"
        "from . import client\n"
        "from ..app.server import run\n"
        "if TYPE_CHECKING:\n"
        "    from aiodicom.app.archive.storage import Storage\n"
        "def f():\n"
        "    from .qr import x\n"
        "    if TYPE_CHECKING:\n"
        "        import tests.faultproxy\n"
        "class C:\n"
        "    async def g(self):\n"
        "        import ssl\n"
    )
    found = {(imp.target, imp.where) for imp in _imports_in(source, "aiodicom.aio.server", False)}
    assert found == {
        ("typing", "module level"),
        ("asyncio", "module level"),
        ("aiodicom.aio.client", "module level"),
        ("aiodicom.app.server.run", "module level"),
        ("aiodicom.app.archive.storage", "TYPE_CHECKING"),
        ("aiodicom.aio.qr", "in f()"),
        ("tests.faultproxy", "in f()"),
        ("ssl", "in g()"),
    }
    in_package = _imports_in("from .buffer import Reader\n", "aiodicom.core", True)
    assert [imp.target for imp in in_package] == ["aiodicom.core.buffer"]
    # The facade's lazy names count as imports of their homes: `from aiodicom import Server`
    # in the core runs up to aio as surely as `from aiodicom.aio.server import Server`.
    via_facade = _imports_in("from aiodicom import Server, __version__\n", "aiodicom.core.fsm",
                             False)
    assert [imp.target for imp in via_facade] == ["aiodicom.aio.server", "aiodicom"]


def _rel(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "aiodicom" or module in FACADES:
        return None
    if module in BASE:
        return "core"
    return parts[1] if len(parts) > 1 and parts[1] in LAYER_RANK else None


def _ids(path: Path) -> str:
    return str(path.relative_to(SRC))


# --- sans-I/O core -------------------------------------------------------------------------


def test_core_exists() -> None:
    assert len(CORE_FILES) >= 5, f"found only {len(CORE_FILES)} files under {SRC / 'core'}"


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=_ids)
def test_core_imports_no_io(path: Path) -> None:
    bad = [
        imp
        for imp in imports_of(path)
        if imp.target.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    lines = [f"  {_rel(path)}:{imp.line} ({imp.where}) imports {imp.target}" for imp in bad]
    assert not bad, (
        "aiodicom.core (and errors.py, settings.py, which core imports) must stay sans-I/O;"
        " take the clock as a `now` argument and leave I/O to aiodicom.aio:\n" + "\n".join(lines)
    )


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=_ids)
def test_core_imports_only_stdlib_and_pydicom(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | CORE_THIRD_PARTY | {"aiodicom", "__future__"}
    bad = [imp for imp in imports_of(path) if imp.target.split(".")[0] not in allowed]
    lines = [f"  {_rel(path)}:{imp.line} ({imp.where}) imports {imp.target}" for imp in bad]
    assert not bad, "aiodicom.core depends on the stdlib and pydicom only:\n" + "\n".join(lines)


def test_importing_core_loads_no_io_modules() -> None:
    """The import graph as Python runs it: catches what the package facade or pydicom drags in."""
    code = (
        "import aiodicom.core, sys; "
        f"print(','.join(m for m in {NOT_LOADED_BY_CORE!r} if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert run.returncode == 0, f"`import aiodicom.core` failed:\n{run.stderr}"
    loaded = run.stdout.strip()
    assert not loaded, (
        f"`import aiodicom.core` loaded {loaded}; find the chain with"
        f" `{sys.executable} -X importtime -c 'import aiodicom.core'`"
    )


# --- imports run down the layers only --------------------------------------------------------


LAYERED_FILES = [p for p in ALL_FILES if _layer(_module_name(p)) is not None]


def test_every_module_has_a_layer() -> None:
    unlayered = {_module_name(p) for p in ALL_FILES} - {_module_name(p) for p in LAYERED_FILES}
    assert unlayered == FACADES, f"modules outside core/aio/app: {sorted(unlayered - FACADES)}"
    assert _layer("aiodicom.errors") == "core"
    assert _layer("aiodicom.aio.server") == "aio"
    assert _layer("aiodicom.app.archive.storage") == "app"
    assert _layer("pydicom.uid") is None


@pytest.mark.parametrize("path", LAYERED_FILES, ids=_ids)
def test_imports_run_down_the_layers(path: Path) -> None:
    module = _module_name(path)
    own = _layer(module)
    assert own is not None
    bad = []
    for imp in imports_of(path):
        theirs = _layer(imp.target)
        if theirs is not None and LAYER_RANK[theirs] > LAYER_RANK[own]:
            bad.append(f"  {_rel(path)}:{imp.line} ({imp.where}) imports {imp.target} ({theirs})")
    assert not bad, (
        f"{module} is in the {own} layer and may import only what lies below it"
        " (core <- aio <- app); move the shared piece down or pass it in:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("path", ALL_FILES, ids=_ids)
def test_src_imports_no_tests(path: Path) -> None:
    bad = [
        f"  {_rel(path)}:{imp.line} ({imp.where}) imports {imp.target}"
        for imp in imports_of(path)
        if imp.target.split(".")[0] in {"tests", "conftest"}
    ]
    assert not bad, "the library must not import its tests:\n" + "\n".join(bad)


# --- no import cycle inside aiodicom.aio --------------------------------------------------


def _aio_graph() -> dict[str, dict[str, Import]]:
    graph: dict[str, dict[str, Import]] = {name: {} for name in AIO}
    for name, path in AIO.items():
        for imp in imports_of(path):
            if imp.target in AIO and imp.target != name:
                graph[name].setdefault(imp.target, imp)
    return graph


def _find_cycle(graph: dict[str, dict[str, Import]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first search, deterministic order)."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_a_path() -> None:
    imp = Import("x", 1, "module level")
    assert _find_cycle({"a": {"b": imp}, "b": {"c": imp}, "c": {"a": imp}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": imp}, "b": {}}) is None


def test_no_import_cycle_in_aio() -> None:
    graph = _aio_graph()
    assert graph, "no modules found under aiodicom.aio"
    cycle = _find_cycle(graph)
    if cycle is None:
        return
    steps = []
    for here, there in zip(cycle, cycle[1:], strict=False):
        imp = graph[here][there]
        steps.append(f"  {_rel(AIO[here])}:{imp.line} ({imp.where}) imports {there}")
    pytest.fail(
        "import cycle in aiodicom.aio: " + " -> ".join(m.rsplit(".", 1)[1] for m in cycle)
        + "\n" + "\n".join(steps)
        + "\nlazy and TYPE_CHECKING imports count: move the shared piece into a module both"
        " can import, or pass it in"
    )


# --- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=_ids)
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{_rel(path)} has {lines} lines, over {MAX_LINES}: split it into rooms"
        " (docs/design/layers.md)"
    )


# --- the public facade ----------------------------------------------------------------------


def test_every_public_name_imports() -> None:
    import aiodicom

    missing = [name for name in aiodicom.__all__ if not hasattr(aiodicom, name)]
    assert not missing, f"aiodicom.__all__ names that do not import: {missing}"
    assert set(aiodicom.__all__) <= set(dir(aiodicom)), "dir(aiodicom) must list every name"
    lazy = set(aiodicom._LAZY)
    assert lazy == set(aiodicom.__all__) - {"__version__"}, (
        f"aiodicom._LAZY and __all__ disagree on {sorted(lazy ^ set(aiodicom.__all__))}"
    )
    namespace: dict[str, object] = {}
    exec("from aiodicom import *", namespace)
    assert set(aiodicom.__all__) <= set(namespace)


def test_unknown_public_name_is_an_attribute_error() -> None:
    import aiodicom

    with pytest.raises(AttributeError, match="no_such_name"):
        aiodicom.no_such_name  # noqa: B018

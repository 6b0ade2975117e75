"""The layering of rag_cli: no module imports a module of a higher layer, and no import cycles.

``LAYERS`` below is the one statement of the layers; ARCHITECTURE.md ("Layering") shows the same
table, and a test here fails when the two differ (``python -m tests.test_layering`` prints the
table to paste). Every import counts, those inside functions too (a late import is still a
dependency); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "rag_cli"

# Bottom to top. A module may import modules of its own layer and of the layers below it, except
# that two packages of one layer do not import each other. A name ending in ".*" covers a package
# and its modules; an exact name wins over a package.
LAYERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("core", ("rag_cli", "rag_cli.errors", "rag_cli.models", "rag_cli.progress", "rag_cli.fileio", "rag_cli.crash",
              "rag_cli.observe", "rag_cli.config", "rag_cli.model_catalog", "rag_cli.model_files"),
     "errors, plain records, settings, model folders, logging: what every layer uses"),
    ("serve client", ("rag_cli.serve.protocol", "rag_cli.serve.client"),
     "the warm server's files, wire format and client: standard library and core only, what a served `rag ask` runs"),
    ("ingest", ("rag_cli.ingest.*",), "walking, loading, chunking, tokens, the manifest"),
    ("store", ("rag_cli.store.*", "rag_cli.index_dir", "rag_cli.index_record", "rag_cli.querylog"),
     "embedders, vector stores, the keyword index; the index folder, the index's record of itself, "
     "and the query log kept in it"),
    ("retrieve, generate", ("rag_cli.retrieve.*", "rag_cli.generate.*"),
     "search and fusion; prompts, packing, generators (neither imports the other)"),
    ("pipelines", ("rag_cli.indexer", "rag_cli.ask", "rag_cli.preview", "rag_cli.status", "rag_cli.model_pull"),
     "one library call per command: index, ask, chunk-preview, status, models"),
    ("evaluate, doctor", ("rag_cli.evaluate.*", "rag_cli.doctor.*"),
     "runs over the pipelines: `rag eval`, `rag doctor`"),
    ("facade", ("rag_cli.api", "rag_cli.chat", "rag_cli.serve.remote", "rag_cli.watch"),
     "`api.Index`: local or server, served or in-process, decided once; "
     "`rag eval`'s Searcher/Asker through `rag serve`; `rag chat`'s conversation on one `api.Index`; "
     "the watcher (`--watch`: the indexer on changes)"),
    ("serve", ("rag_cli.serve.*",), "`rag serve`: the server and its warm backend (built on `api.Index`)"),
    ("agents", ("rag_cli.mcp_server",),
     "`rag mcp`: the index as MCP tools for AI agents, on `rag serve`'s warm backend and `api.Index`"),
    ("cli", ("rag_cli.cli.*", "rag_cli.__main__"), "Typer commands, rendering: the only typer/rich user"),
)
# Test support sits beside the layers: it may import anything, and production code imports it
# only from inside a function that a registry runs when its name is chosen -- never at import.
TESTING = ("rag_cli.testing.*",)
TEST_SUPPORT_ENTRIES = {("rag_cli.store.embedders", "rag_cli.testing.fakes")}  # embedding.backend = "hash"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    late: bool  # inside a function: runs when called, not when the module is imported


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str]) -> None:
        self.name, self.is_package, self.known = name, is_package, known
        self.found: list[Import] = []
        self._depth = 0  # functions entered

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:  # the body never runs; an else branch would
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, target: str, node: ast.stmt) -> None:
        if target.split(".")[0] == "rag_cli":
            assert target in self.known, f"{self.name}:{node.lineno} imports {target}, which is not a module here"
            self.found.append(Import(self.name, target, node.lineno, self._depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        if not base.startswith("rag_cli"):
            return
        submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.known]
        for target in submodules:  # `from rag_cli.serve import client` imports rag_cli.serve.client
            self._add(target, node)
        if len(submodules) < len(node.names):  # names defined in the module (or package) itself
            self._add(base, node)


def imports(root: Path = PACKAGE) -> list[Import]:
    """Every import of a rag_cli module by a rag_cli module, with the implicit import of a parent
    package whose ``__init__`` itself imports something (importing ``rag_cli.doctor.base`` runs
    ``rag_cli.doctor``'s ``__init__`` first)."""
    paths = modules(root)
    found: list[Import] = []
    for name, path in paths.items():
        collector = _Collector(name, path.name == "__init__.py", set(paths))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found += collector.found
    heavy_packages = {i.importer for i in found if paths[i.importer].name == "__init__.py" and not i.late}
    for imp in list(found):
        parts = imp.target.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if parent in heavy_packages and not (imp.importer == parent or imp.importer.startswith(parent + ".")):
                found.append(Import(imp.importer, parent, imp.line, imp.late))
    return found


def _matches(name: str, entry: str) -> bool:
    if entry.endswith(".*"):
        return name == entry[:-2] or name.startswith(entry[:-1])
    return name == entry


def _package_of(name: str) -> str | None:
    """The ``.*`` entry of LAYERS that places ``name`` (None: placed by its exact name)."""
    if any(name in entries for _, entries, _ in LAYERS):
        return None
    found = [e for _, entries, _ in LAYERS for e in entries if e.endswith(".*") and _matches(name, e)]
    return max(found, key=len) if found else None


def layer_of(name: str) -> int | None:
    """The index of ``name``'s layer in LAYERS; None for test support. KeyError: in no layer."""
    if any(_matches(name, e) for e in TESTING):
        return None
    exact = [n for n, (_, entries, _) in enumerate(LAYERS) if name in entries]
    if exact:
        return exact[0]
    packages = [(len(e), n) for n, (_, entries, _) in enumerate(LAYERS) for e in entries
                if e.endswith(".*") and _matches(name, e)]
    if not packages:
        raise KeyError(name)
    return max(packages)[1]


def against_the_layers(found: list[Import]) -> list[str]:
    problems = []
    for imp in found:
        try:
            low, high = layer_of(imp.importer), layer_of(imp.target)
        except KeyError:
            continue  # a module in no layer: test_every_module_has_a_layer names it
        if low is None:
            continue  # test support may import anything
        where = f"{imp.importer}:{imp.line} imports {imp.target}"
        if high is None:
            if not imp.late:
                problems.append(f"{where}: test support, at import time")
            elif (imp.importer, imp.target) not in TEST_SUPPORT_ENTRIES:
                problems.append(f"{where}: test support, not from a registry entry (TEST_SUPPORT_ENTRIES)")
        elif high > low:
            problems.append(f"{where}: layer '{LAYERS[low][0]}' imports layer '{LAYERS[high][0]}'")
        elif high == low:
            mine, theirs = _package_of(imp.importer), _package_of(imp.target)
            if mine and theirs and mine != theirs:
                problems.append(f"{where}: {mine} and {theirs} share a layer")
    return problems


def cycles(found: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if imp.importer != imp.target:
            graph.setdefault(imp.importer, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def markdown_table() -> str:
    rows = ["| layer | modules | what |", "| --- | --- | --- |"]
    for n, (name, entries, what) in enumerate(LAYERS):
        rows.append(f"| {n} {name} | {', '.join(f'`{e}`' for e in entries)} | {what} |")
    rows.append(f"| beside | {', '.join(f'`{e}`' for e in TESTING)} | test support: imports anything; production "
                "imports it only inside a registry entry, when chosen |")
    return "\n".join(rows)


# -- the tests --------------------------------------------------------------------------------------
def test_every_module_has_a_layer() -> None:
    unplaced = []
    for name in modules():
        try:
            layer_of(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f"put these in LAYERS (tests/test_layering.py) and ARCHITECTURE.md: {unplaced}"


def test_no_module_imports_a_higher_layer() -> None:
    problems = against_the_layers(imports())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_no_import_cycles() -> None:
    found = cycles(imports())
    assert not found, f"import cycles among rag_cli modules: {found}"


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """Late imports, relative imports and `from package import module` are found; TYPE_CHECKING
    ones are not; an upward import and a cycle are reported."""
    package = tmp_path / "rag_cli"
    (package / "store").mkdir(parents=True)
    (package / "cli").mkdir()
    for path, text in {
        "__init__.py": "",
        "errors.py": "",
        "store/__init__.py": "",
        "store/chroma.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rag_cli.cli import app\n"
                           "def f():\n    from ..cli import app\n",
        "store/catalog.py": "from rag_cli.store import chroma\nfrom . import chroma as again\nimport rag_cli.errors\n",
        "cli/__init__.py": "",
        "cli/app.py": "from rag_cli.store.catalog import *\nimport rag_cli.cli.app\n",
    }.items():
        (package / path).write_text(text)
    found = imports(package)
    assert {(i.importer, i.target, i.late) for i in found} == {
        ("rag_cli.store.chroma", "rag_cli.cli.app", True), ("rag_cli.store.catalog", "rag_cli.store.chroma", False),
        ("rag_cli.store.catalog", "rag_cli.errors", False), ("rag_cli.cli.app", "rag_cli.store.catalog", False),
        ("rag_cli.cli.app", "rag_cli.cli.app", False)}
    assert against_the_layers(found) == [
        "rag_cli.store.chroma:5 imports rag_cli.cli.app: layer 'store' imports layer 'cli'"]
    assert cycles(found) == [["rag_cli.cli.app", "rag_cli.store.catalog", "rag_cli.store.chroma"]]
    assert layer_of("rag_cli.serve.client") < layer_of("rag_cli.status") < layer_of("rag_cli.serve.server")
    assert layer_of("rag_cli.testing.fakes") is None


def test_architecture_md_shows_the_same_layers() -> None:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = re.search(r"^## Layering\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "ARCHITECTURE.md has no '## Layering' section"
    assert markdown_table() in section.group(1), \
        "ARCHITECTURE.md's layer table differs from LAYERS: paste `python -m tests.test_layering`'s output"


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
    if len(sys.argv) > 1:  # a folder holding another rag_cli/ (an older checkout): its problems
        other = Path(sys.argv[1]) / "rag_cli"
        found = imports(other)
        print("\n".join(against_the_layers(found)) or "no import against the layers")
        print(cycles(found) or "no cycles")

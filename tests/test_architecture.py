"""docs/architecture.md's import arrows hold: none points to a layer above its own, none runs in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dataflex"
PAGE = PACKAGE.parent / "docs" / "architecture.md"

#: Layer of each top-level part, lowest first; the shared modules are below everything.
LAYERS = {
    "errors": 0,
    "registry": 0,
    "configs": 0,
    "data": 0,
    "distributed": 0,
    "engines": 0,
    "io": 0,
    "checks": 0,
    "logging_utils": 0,
    "stop_points": 0,
    "projectors": 1,
    "passes": 1,
    "gradients": 2,
    "embeddings": 2,
    "selectors": 3,
    "train": 4,
    "offline": 5,
    "cli": 6,
    "launch": 6,
    "relaunch": 6,
    "reference": 6,
}
SHARED = {name for name, layer in LAYERS.items() if layer == 0}


def part_of(module: str) -> str:
    """``dataflex.train.dynamic.trainer`` → ``train``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """The ``dataflex.*`` modules ``path`` imports at run time (``TYPE_CHECKING`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dataflex."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dataflex.")]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    assert own in LAYERS, f"{own} is not on docs/architecture.md's map: add it to the page and to LAYERS"
    for line, module in runtime_imports(path):
        target = part_of(module)
        assert target in LAYERS, f"{path.name}:{line} imports {module}, which is not on the map"
        ok = target in SHARED if own in SHARED else LAYERS[target] <= LAYERS[own]
        assert ok, f"{path.relative_to(PACKAGE)}:{line}: {own} imports {module} ({target} is above it)"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``dataflex/train/config.py`` → ``dataflex.train.config``; a package's ``__init__`` → the package."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the ``dataflex`` modules it imports at run time.

    ``from pkg import name`` is an arrow to ``pkg.name`` when that is a module (it does
    not need ``pkg/__init__.py``'s other names), else to ``pkg``.
    """
    known = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        runtime = set(runtime_imports(path))
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.lineno, node.module) in runtime:
                modules = {f"{node.module}.{a.name}" for a in node.names}
                targets |= (
                    modules & set(known) if modules <= set(known) else modules & set(known) | {node.module}
                )
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if (node.lineno, a.name) in runtime}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_import_runs_in_a_circle():
    assert cycles(import_graph()) == []


def test_no_part_import_runs_in_a_circle():
    """Between parts too (e.g. ``data/`` and ``configs/`` of the shared layer)."""
    parts: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets)
    assert cycles({p: t - {p} for p, t in parts.items()}) == []


def test_the_cycle_check_sees_a_circle(tmp_path):
    root = tmp_path / "dataflex"
    (root / "a").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a" / "__init__.py").write_text("from dataflex.a import one\n")
    (root / "a" / "one.py").write_text("def f():\n    from dataflex.b import two\n")  # a lazy import counts
    (root / "b.py").write_text("from dataflex.a import one\nimport dataflex.c\n")
    (root / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dataflex.b\n")
    graph = import_graph(root)
    assert graph["dataflex.a.one"] == {"dataflex.b"} and graph["dataflex.c"] == set()
    assert cycles(graph) == [["dataflex.a.one", "dataflex.b"]]


def test_the_page_names_every_part():
    text = PAGE.read_text()
    for part in LAYERS:
        assert f"{part}/" in text or f"{part}.py" in text, part


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from dataflex.train.model import load_model\n"
        "if TYPE_CHECKING:\n    from dataflex.cli import main\n"
    )
    assert runtime_imports(bad) == [(2, "dataflex.train.model")]


def test_the_package_table_lists_each_part_once():
    rows = [line.split("|")[1].strip() for line in PAGE.read_text().splitlines() if line.startswith("| `")]
    assert rows and len(rows) == len(set(rows)), sorted(r for r in rows if rows.count(r) > 1)


def any_annotations(path: Path) -> list[str]:
    """``name:line`` of each parameter or return of a function in ``path`` annotated ``Any``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(p for p in (a.vararg, a.kwarg) if p)]
        annotations = [(p.arg, p.annotation) for p in params] + [("return", node.returns)]
        for what, annotation in annotations:
            if annotation is not None and ast.unparse(annotation).strip("'\"") in ("Any", "typing.Any"):
                found.append(f"{node.name}({what}):{node.lineno}")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_signature_takes_or_returns_any(path):
    """The seams are typed (ruff's ANN401 says the same; this holds without ruff installed)."""
    assert not any_annotations(path), f"{path.relative_to(PACKAGE)}: annotated Any: {any_annotations(path)}"


def test_the_any_check_sees_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import Any\n"
        "def f(x: Any, *a: int, **kw: 'Any') -> Any: ...\n"
        "def g(x: dict[str, Any]) -> object: ...\n"
    )
    assert any_annotations(bad) == ["f(x):2", "f(kw):2", "f(return):2"]

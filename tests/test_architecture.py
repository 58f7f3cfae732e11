"""docs/architecture.md's import arrows hold: no module imports a layer above its own."""

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
    "gradients": 2,
    "selectors": 3,
    "embeddings": 3,
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

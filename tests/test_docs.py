"""Run the code blocks of the docs, so that what users copy works.

In each page, fenced ``python`` blocks run in order in one namespace, in a temporary
working directory. A ``yaml`` block whose first line is ``# <file name>`` is written
to that file first, so later Python blocks can load it. Blocks preceded by
``<!-- no-run -->`` are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataflex.registry import SELECTORS

ROOT = Path(__file__).resolve().parents[1]
RUN_PAGES = ["README.md", "docs/writing-a-selector.md"]
BLOCK = re.compile(r"(<!-- no-run -->\s*)?```(\w+)\n(.*?)```", re.S)


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return [(lang, body) for skip, lang, body in BLOCK.findall(page.read_text()) if not skip]


@pytest.fixture
def clean_registry():
    saved = dict(SELECTORS._entries)
    yield
    SELECTORS._entries.clear()
    SELECTORS._entries.update(saved)


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch, clean_registry):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(ROOT / page)
    assert any(lang == "python" for lang, _ in blocks), f"{page} has no python block to run"
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    for lang, body in blocks:
        first = body.splitlines()[0] if body.strip() else ""
        if lang == "yaml" and re.fullmatch(r"# [\w.\-/]+\.ya?ml", first):
            (tmp_path / first[2:]).write_text(body)
        elif lang == "python":
            exec(compile(body, f"{page}:python-block", "exec"), namespace)


def test_readme_test_command_installs_cpu_torch_and_runs_pytest():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- test-command -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its <!-- test-command --> block, which .ci/run executes"
    command = block.group(1)
    assert "pip install torch==2.13.0" in command
    assert "pytest" in command
    assert "<!-- test-command -->" in (ROOT / ".ci/run").read_text()

"""The code blocks of docs/selectors/*.md run as written (same rules as tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- no-run -->\s*)?```(\w+)\n(.*?)```", re.S)


@pytest.mark.parametrize("page", ["less.md", "loss.md", "random.md"])
def test_selector_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [
        (lang, body)
        for skip, lang, body in BLOCK.findall((ROOT / "docs/selectors" / page).read_text())
        if not skip
    ]
    assert any(lang == "python" for lang, _ in blocks)
    namespace: dict = {"__name__": f"docs_{page}"}
    for lang, body in blocks:
        first = body.splitlines()[0] if body.strip() else ""
        if lang == "yaml" and re.fullmatch(r"# [\w.\-/]+\.ya?ml", first):
            (tmp_path / first[2:]).write_text(body)
        elif lang == "python":
            exec(compile(body, f"docs/selectors/{page}", "exec"), namespace)

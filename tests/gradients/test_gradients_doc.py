"""The python blocks of docs/gradients.md run (same conventions as tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "gradients.md"
BLOCK = re.compile(r"(<!-- no-run -->\s*)?```(\w+)\n(.*?)```", re.S)


def test_gradients_page_code_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [body for skip, lang, body in BLOCK.findall(PAGE.read_text()) if lang == "python" and not skip]
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "docs_gradients"}
    for body in blocks:
        exec(compile(body, f"{PAGE.name}:python-block", "exec"), namespace)
    assert namespace["store"].complete

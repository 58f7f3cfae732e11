"""Run the python blocks of docs/dynamic-training.md, in order, in one namespace.

A block preceded by ``<!-- no-run -->`` is skipped; one preceded by
``<!-- requires: pkg -->`` runs only when ``pkg`` is importable.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from dataflex.registry import SELECTORS

ROOT = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"(<!-- (no-run|requires: [\w-]+) -->\s*)?```(\w+)\n(.*?)```", re.S)


@pytest.fixture
def clean_registry():
    saved = dict(SELECTORS._entries)
    yield
    SELECTORS._entries.clear()
    SELECTORS._entries.update(saved)


def test_dynamic_training_page_runs(tmp_path, monkeypatch, clean_registry):
    monkeypatch.chdir(tmp_path)
    page = ROOT / "docs" / "dynamic-training.md"
    namespace: dict = {"__name__": "docs_dynamic_training"}
    ran = 0
    for _, marker, lang, body in BLOCK.findall(page.read_text()):
        if lang != "python" or marker == "no-run":
            continue
        if marker.startswith("requires: ") and importlib.util.find_spec(marker.split(": ")[1]) is None:
            continue
        exec(compile(body, f"{page.name}:python-block", "exec"), namespace)
        ran += 1
    assert ran >= 3
    assert (tmp_path / "out" / "dataflex" / "selections.jsonl").is_file()
    assert (tmp_path / "out" / "checkpoint-4" / "dataflex_selection.json").is_file()
    assert "longest_first" in SELECTORS

"""The python blocks of docs/projectors.md run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "projectors.md"
BLOCK = re.compile(r"(<!-- no-run -->\s*)?```python\n(.*?)```", re.S)


def test_docs_projectors_code_runs(capsys):
    blocks = [body for skip, body in BLOCK.findall(DOC.read_text()) if not skip]
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "docs_projectors"}
    for body in blocks:
        exec(compile(body, f"{DOC.name}:python-block", "exec"), namespace)
    printed = capsys.readouterr().out
    # The outputs the page shows in comments are the real ones.
    for shown in re.findall(r"^# (\{.*\})$", DOC.read_text(), re.M):
        assert shown in printed
    assert "'hash_scheme': 'lowbias32-xor-v1'" in printed
    assert "['auto', 'cuda', 'gaussian', 'identity', 'rademacher']" in printed

"""The docs cover every config key, and their runnable code runs."""

from __future__ import annotations

import re

import pytest

from dataflex.data import templates
from dataflex.train.config import ExportConfig, TrainConfig
from tests.train.conftest import REPO

DOCS = REPO / "docs"


@pytest.mark.parametrize("schema", [TrainConfig, ExportConfig])
def test_configuration_reference_lists_every_key(schema):
    text = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE))
    assert set(schema.model_fields) <= documented


def test_datasets_doc_python_runs():
    text = (DOCS / "datasets.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    try:
        for block in blocks:
            exec(compile(block, "docs/datasets.md", "exec"), {})
        assert "mychat" in templates.list_templates()
        pairs = templates.get_template("mychat").render_pairs(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            eos="</s>",
        )
        assert pairs == [("<user>hi</user><bot>", "yo</s>")]
    finally:
        templates._TEMPLATES.pop("mychat", None)

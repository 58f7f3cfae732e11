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


def test_quickstart_python_blocks_run(tmp_path, monkeypatch):
    text = (DOCS / "quickstart.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(blocks[0], "docs/quickstart.md", "exec"), namespace)
    assert namespace["stats"].kept == 32
    assert namespace["batch"]["labels"].shape[0] == 4
    train_block = blocks[1].replace("output_dir=saves/quickstart/py", f"output_dir={tmp_path / 'py'}")
    train_block = train_block.replace("max_steps=10", "max_steps=1")
    exec(compile(train_block, "docs/quickstart.md", "exec"), namespace)
    assert namespace["result"].global_step == 1

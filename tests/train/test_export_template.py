"""``dataflex-cli export`` writes a named template into the exported tokenizer's chat_template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import dataflex.train.export as export
from dataflex.cli import main
from dataflex.errors import ConfigError
from dataflex.registry import TEMPLATES
from dataflex.train.config import load_export_config
from tests.train.conftest import QUICKSTART

CONVERSATION = {
    "system": "Answer in capitals.",
    "messages": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "HELLO"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "BYE"},
    ],
}


def merge_yaml(tmp_path, template: str | None):
    path = tmp_path / "merge.yaml"
    text = f"model_name_or_path: {QUICKSTART / 'model'}\nexport_dir: {tmp_path / 'merged'}\n"
    path.write_text(text + (f"template: {template}\n" if template else ""))
    return path


def test_the_exported_tokenizer_renders_the_training_text(tmp_path, capsys):
    assert main(["export", str(merge_yaml(tmp_path, "llama3"))]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")  # read back from disk
    messages = [{"role": "system", "content": CONVERSATION["system"]}, *CONVERSATION["messages"]]
    pairs = TEMPLATES.get("llama3").render_pairs(CONVERSATION, bos=tok.bos_token, eos=tok.eos_token)
    assert tok.apply_chat_template(messages, tokenize=False) == "".join(s + t for s, t in pairs)
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt == pairs[0][0] + pairs[0][1] + pairs[1][0]
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_no_template_keeps_the_tokenizer_chat_template(tmp_path):
    assert main(["export", str(merge_yaml(tmp_path, None))]) == 0
    original = AutoTokenizer.from_pretrained(QUICKSTART / "model").chat_template
    assert original and AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template == original


def test_a_template_that_renders_otherwise_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    faithful = export.template_to_jinja
    # a plausible bug: the generated code drops the separator between turns
    monkeypatch.setattr(
        export, "template_to_jinja", lambda t, b, e: faithful(t, b, e).replace('"\\n" + ', "")
    )
    monkeypatch.setattr(export, "load_model", no_model)
    with pytest.raises(ConfigError, match=r"template: template 'default' cannot be written faithfully"):
        export.run_export(load_export_config(merge_yaml(tmp_path, "default")))
    assert not (tmp_path / "merged").exists()

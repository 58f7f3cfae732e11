"""Fixtures of the data tests: the committed quickstart tokenizer and small dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


@pytest.fixture(scope="session")
def qs_tokenizer():
    """The committed quickstart tokenizer (byte-level BPE, knows every named template's tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(QUICKSTART / "model")


@pytest.fixture
def write_dataset(tmp_path):
    """``write_dataset(name, rows, entry=None, raw=None)`` → dataset_dir holding it and dataset_info.json."""

    def write(name: str, rows=None, entry: dict | None = None, raw: str | None = None, suffix=".json"):
        path = tmp_path / f"{name}{suffix}"
        path.write_text(raw if raw is not None else json.dumps(rows), encoding="utf-8")
        info_path = tmp_path / "dataset_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info[name] = {"file_name": path.name, **(entry or {})}
        info_path.write_text(json.dumps(info))
        return tmp_path

    return write


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A word-level tokenizer without a chat template or template tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")

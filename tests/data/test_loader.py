"""Dataset lookup and reading: formats, options, and every bad input with its message."""

from __future__ import annotations

import json
import logging

import pytest

from dataflex.data import load_dataset_examples
from dataflex.errors import ConfigError

ALPACA = [
    {"instruction": "Add.", "input": "1 + 2", "output": "3", "task": "math"},
    {
        "instruction": "Greet.",
        "input": "",
        "output": "Hello",
        "system": "Be kind.",
        "history": [["hi", "hey"]],
    },
]


def test_alpaca_rows_become_conversations(write_dataset):
    d = write_dataset(
        "toy", ALPACA, {"columns": {"system": "system", "history": "history", "subtask": "task"}}
    )
    first, second = load_dataset_examples("toy", d)
    assert first["messages"] == [
        {"role": "user", "content": "Add.\n1 + 2"},
        {"role": "assistant", "content": "3"},
    ]
    assert first["subtask"] == "math"
    assert first["dataset"] == "toy"
    assert second["system"] == "Be kind."
    assert [m["content"] for m in second["messages"]] == ["hi", "hey", "Greet.", "Hello"]
    assert "subtask" not in second


def test_sharegpt_role_content_and_system_turn(write_dataset):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "tool", "content": "obs"},
                {"role": "assistant", "content": "a2"},
            ]
        }
    ]
    d = write_dataset("chat", rows, {"formatting": "sharegpt", "columns": {"messages": "messages"}})
    (ex,) = load_dataset_examples("chat", d)
    assert ex["system"] == "S"
    assert [m["role"] for m in ex["messages"]] == ["user", "assistant", "observation", "assistant"]


def test_direct_paths_jsonl_lists_and_max_samples(tmp_path, write_dataset):
    d = write_dataset("toy", ALPACA * 3)
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ALPACA) + "\n")
    examples = load_dataset_examples(f"toy, {jsonl}", d, max_samples=4)
    assert [e["dataset"] for e in examples] == ["toy"] * 4 + ["extra"] * 2
    sharegpt = tmp_path / "conv.json"
    sharegpt.write_text(
        json.dumps([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    )
    (ex,) = load_dataset_examples(str(sharegpt), tmp_path)
    assert ex["messages"][1] == {"role": "assistant", "content": "a"}


def test_unknown_name_suggests_closest_entries(write_dataset):
    d = write_dataset("alpaca_en_demo", ALPACA)
    with pytest.raises(
        ConfigError, match=r"'alpaca_en_dem' is not in .*dataset_info.json\. Did you mean 'alpaca_en_demo'"
    ):
        load_dataset_examples("alpaca_en_dem", d)


def test_missing_dataset_info_and_missing_file(tmp_path, write_dataset):
    with pytest.raises(ConfigError, match=r"dataset 'toy' not found: .*dataset_info.json' does not exist"):
        load_dataset_examples("toy", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"dataset file 'missing.json' does not exist"):
        load_dataset_examples("missing.json", tmp_path)
    d = write_dataset("toy", ALPACA)
    (d / "toy.json").unlink()
    with pytest.raises(ConfigError, match=r"dataset 'toy': file .*toy.json.* does not exist"):
        load_dataset_examples("toy", d)


def test_hub_only_and_ranking_entries_are_refused(tmp_path):
    # the entries of LLaMA-Factory's data/dataset_info.json, written here so the check runs anywhere
    info = {
        "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
        "dpo_en_demo": {
            "file_name": "dpo_en_demo.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    (tmp_path / "dpo_en_demo.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"'alpaca_en' .* has no 'file_name' \(it points at the hub"):
        load_dataset_examples("alpaca_en", tmp_path)
    with pytest.raises(ConfigError, match=r"preference \(ranking\) dataset"):
        load_dataset_examples("dpo_en_demo", tmp_path)


def test_wrong_columns_name_what_was_found(write_dataset):
    d = write_dataset("toy", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        ConfigError, match=r"no row has the columns \['instruction', 'output'\].*\['answer', 'question'\]"
    ):
        load_dataset_examples("toy", d)


def test_empty_dataset(write_dataset):
    d = write_dataset("toy", [])
    with pytest.raises(ConfigError, match=r"dataset 'toy' .* is empty: it holds no examples"):
        load_dataset_examples("toy", d)


def test_non_json_file(write_dataset):
    d = write_dataset("toy", raw="instruction,output\nAdd,3\n")
    with pytest.raises(ConfigError, match=r"toy.json is not valid JSON: .* line 1"):
        load_dataset_examples("toy", d)
    d = write_dataset(
        "lines", raw='{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
    )
    with pytest.raises(ConfigError, match=r"name the file \.jsonl"):
        load_dataset_examples("lines", d)
    d = write_dataset("bad", raw='{"instruction": "a", "output": "b"}\nnot json\n', suffix=".jsonl")
    with pytest.raises(ConfigError, match=r"bad.jsonl: line 2 is not valid JSON"):
        load_dataset_examples("bad", d)


def test_empty_answer_is_a_counted_skip_or_a_strict_error(write_dataset, caplog):
    rows = [
        *ALPACA,
        {"instruction": "Say nothing.", "input": "", "output": "  "},
        {"instruction": "x", "output": ""},
    ]
    d = write_dataset("toy", rows)
    with caplog.at_level(logging.WARNING):
        examples = load_dataset_examples("toy", d)
    assert len(examples) == 2
    assert "skipped 2 of 4 rows: 2 × empty answer ('output') (first: row 2)" in caplog.text
    with pytest.raises(
        ConfigError, match=r"row 2: empty answer \('output'\); fix the row, or set strict: false"
    ):
        load_dataset_examples("toy", d, strict=True)


def test_all_rows_bad_is_an_error(write_dataset):
    d = write_dataset("toy", [{"instruction": "x", "output": ""}])
    with pytest.raises(ConfigError, match=r"all 1 rows are unusable \(1 × empty answer"):
        load_dataset_examples("toy", d)


def test_bad_sharegpt_turn_order_is_skipped(write_dataset):
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
    unanswered = {"conversations": [{"from": "human", "value": "q"}]}
    d = write_dataset("conv", [good, bad, unanswered], {"formatting": "sharegpt"})
    assert len(load_dataset_examples("conv", d)) == 1
    with pytest.raises(ConfigError, match=r"row 1: message 0 has role 'assistant'"):
        load_dataset_examples("conv", d, strict=True)


def test_max_samples_must_be_positive(write_dataset):
    with pytest.raises(ConfigError, match="max_samples must be >= 1"):
        load_dataset_examples("toy", write_dataset("toy", ALPACA), max_samples=0)


def test_multimodal_and_preference_columns_are_refused(write_dataset):
    mllm = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}}
    d = write_dataset("mllm_demo", [{"messages": [], "images": []}], mllm)
    with pytest.raises(ConfigError, match=r"'mllm_demo' has \['images'\] columns \(multimodal or preference"):
        load_dataset_examples("mllm_demo", d)
    d = write_dataset("toy", ALPACA, {"columns": {"promt": "instruction"}})
    with pytest.raises(ConfigError, match=r"toy.columns.promt: unknown key 'promt'. Did you mean 'prompt'"):
        load_dataset_examples("toy", d)

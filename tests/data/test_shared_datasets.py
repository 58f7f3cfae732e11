"""The LLaMA-Factory demo datasets load as they are and are masked exactly."""

from __future__ import annotations

import json
import random

import pytest

from dataflex.data import get_template, load_dataset_examples, tokenize_examples
from tests.data.masking import assert_masked_exactly

ROWS = {"alpaca_en_demo": 999, "alpaca_zh_demo": 1000, "identity": 91, "glaive_toolcall_en_demo": 300}
TEMPLATES = ["tokenizer", "default", "llama3", "qwen", "chatml", "mistral", "alpaca", "empty"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_demo_dataset_loads_every_row(shared_data, name):
    examples = load_dataset_examples(name, shared_data)
    assert len(examples) == ROWS[name]
    assert {e["dataset"] for e in examples} == {name}
    for e in examples:
        roles = [m["role"] for m in e["messages"]]
        assert roles[0::2]
        assert all(r in ("user", "observation") for r in roles[0::2])
        assert all(r in ("assistant", "function_call") for r in roles[1::2])
        assert len(roles) % 2 == 0


@pytest.mark.parametrize("template_name", TEMPLATES)
@pytest.mark.parametrize("name", sorted(ROWS))
def test_sampled_rows_mask_exactly_the_prompt(shared_data, qs_tokenizer, name, template_name):
    examples = load_dataset_examples(name, shared_data)
    sample = random.Random(f"{name}-{template_name}").sample(examples, 6)
    template = get_template(template_name, qs_tokenizer)
    tokenised, stats = tokenize_examples(sample, qs_tokenizer, template, cutoff_len=100_000)
    assert stats.truncated == 0
    assert len(tokenised) == len(sample)
    bos, eos = qs_tokenizer.bos_token, qs_tokenizer.eos_token
    for example, tok in zip(sample, tokenised):
        pairs = template.render_pairs(example, bos=bos, eos=eos)
        assert len(pairs) == len(example["messages"]) // 2  # every assistant turn is trained on
        assert_masked_exactly(tok, pairs, qs_tokenizer)
        assert tok["dataset"] == name


def test_tool_calls_are_trained_and_observations_masked(shared_data, qs_tokenizer):
    examples = load_dataset_examples("glaive_toolcall_en_demo", shared_data)
    example = next(e for e in examples if any(m["role"] == "observation" for m in e["messages"]))
    assert example["tools"]
    template = get_template("llama3", qs_tokenizer)
    (tok,), _ = tokenize_examples([example], qs_tokenizer, template, cutoff_len=100_000)
    ids, labels = tok["input_ids"], tok["labels"]
    trained = qs_tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    call = next(m["content"] for m in example["messages"] if m["role"] == "function_call")
    observation = next(m["content"] for m in example["messages"] if m["role"] == "observation")
    assert call in trained
    assert observation not in trained
    assert observation in qs_tokenizer.decode(ids)
    assert "You have access to the following tools:" in qs_tokenizer.decode(ids)


def test_default_template_matches_the_tokenizer_chat_template(shared_data, qs_tokenizer):
    examples = load_dataset_examples("glaive_toolcall_en_demo", shared_data)
    plain = [e for e in examples if len(e["messages"]) >= 4 and not e["tools"]][:3]
    with_tools = [e for e in examples if any(m["role"] == "observation" for m in e["messages"])][:3]
    assert plain
    assert with_tools
    template = get_template(None, qs_tokenizer)
    tokenised, _ = tokenize_examples(plain + with_tools, qs_tokenizer, template, cutoff_len=100_000)
    roles = {"user": "user", "observation": "tool", "assistant": "assistant", "function_call": "assistant"}
    for example, tok in zip(plain + with_tools, tokenised):
        messages = [{"role": roles[m["role"]], "content": m["content"]} for m in example["messages"]]
        if example["tools"]:  # this chat template takes no tools: they go into the system prompt
            tools = "You have access to the following tools:\n" + json.dumps(json.loads(example["tools"]))
            messages.insert(0, {"role": "system", "content": tools})
        expected = qs_tokenizer.apply_chat_template(messages, tokenize=False)
        assert qs_tokenizer.decode(tok["input_ids"]) == expected

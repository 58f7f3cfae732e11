"""Templates render the documented text; tokenisation masks, truncates and parallelises correctly."""

from __future__ import annotations

import logging
import random

import pytest

from dataflex.data import SFTDataCollator, get_template, list_templates, templates, tokenize_examples
from dataflex.data.templates import check_template_tokens, split_template_tokens
from dataflex.data.tokenize import infer_seqlen
from dataflex.errors import ConfigError
from tests.data.conftest import QUICKSTART
from tests.data.masking import assert_masked_exactly

CONV = {
    "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    "system": "Be brief.",
    "tools": "",
    "dataset": "toy",
    "subtask": "chat",
}


def test_named_templates_render_the_documented_text():
    llama3 = get_template("llama3").render_pairs(CONV, bos="<s>", eos="</s>")
    assert llama3 == [
        (
            "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "Hello!<|eot_id|>",
        ),
        (
            "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "4<|eot_id|>",
        ),
    ]
    chatml = get_template("chatml").render_pairs(CONV)
    assert chatml[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "Hello!<|im_end|>\n",
    )
    no_system = {**CONV, "system": ""}
    assert get_template("qwen").render_pairs(no_system)[0][0].startswith("<|im_start|>system\nYou are Qwen")
    assert get_template("mistral").render_pairs(CONV, bos="<s>", eos="</s>")[0] == (
        "<s>[INST] Be brief.\n\nHi[/INST]",
        " Hello!</s>",
    )
    assert get_template("alpaca").render_pairs(no_system, eos="</s>")[1] == (
        "### Instruction:\n2+2?\n\n### Response:\n",
        "4</s>\n\n",
    )
    assert get_template("empty").render_pairs(no_system, eos="</s>") == [
        ("Hi", "Hello!</s>"),
        ("2+2?", "4</s>"),
    ]
    # LLaMA-Factory's `default` (Human:/Assistant:, "\n" separator before later turns), not
    # the tokenizer's chat template: a LLaMA-Factory config trains on the same text here.
    assert get_template("default").render_pairs(CONV, eos="</s>") == [
        ("Be brief.\nHuman: Hi\nAssistant:", "Hello!</s>"),
        ("\nHuman: 2+2?\nAssistant:", "4</s>"),
    ]


def test_unknown_template_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown template 'lama3'\. Did you mean 'llama3'"):
        get_template("lama3")
    assert {"tokenizer", "default", "llama3", "qwen", "chatml", "mistral", "alpaca", "empty"} <= set(
        list_templates()
    )


def test_template_tokens_split_by_the_tokenizer_warn_once(tiny_tokenizer, qs_tokenizer, caplog):
    templates._warned_split.clear()  # warned once per process: start from none
    llama3 = get_template("llama3")
    assert split_template_tokens(llama3, qs_tokenizer) == {}  # the quickstart tokenizer knows them
    assert set(split_template_tokens(llama3, tiny_tokenizer)) == set(llama3.special_tokens)
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        check_template_tokens(llama3, tiny_tokenizer)
        check_template_tokens(llama3, tiny_tokenizer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "template 'llama3'" in warnings[0] and "<|start_header_id|> -> " in warnings[0]
    assert "template: tokenizer" in warnings[0]


def test_missing_chat_template(tiny_tokenizer):
    with pytest.raises(ConfigError, match=r"has no chat template, so template: tokenizer cannot be used"):
        get_template(None, tiny_tokenizer)


def test_multi_turn_masks_every_prompt(qs_tokenizer):
    template = get_template("chatml")
    (tok,), stats = tokenize_examples([CONV], qs_tokenizer, template, cutoff_len=1000)
    assert_masked_exactly(tok, template.render_pairs(CONV), qs_tokenizer)
    assert tok["dataset"] == "toy"
    assert tok["subtask"] == "chat"
    assert stats.kept == 1
    assert stats.truncated == 0
    batch = SFTDataCollator(qs_tokenizer.pad_token_id)([tok, tok])
    assert batch["labels"].tolist()[0] == tok["labels"]


@pytest.mark.parametrize("seed", range(20))
def test_infer_seqlen_fits_the_budget(seed):
    rng = random.Random(seed)
    source, target, cutoff = rng.randint(0, 300), rng.randint(0, 300), rng.randint(1, 400)
    s, t = infer_seqlen(source, target, cutoff)
    assert 0 <= s <= source
    assert 0 <= t <= target
    assert s + t <= cutoff
    if source + target <= cutoff:
        assert (s, t) == (source, target)


def test_truncation_is_counted_and_logged(qs_tokenizer, caplog):
    template = get_template("chatml")
    long = {
        **CONV,
        "messages": [
            {"role": "user", "content": "word " * 200},
            {"role": "assistant", "content": "ok " * 50},
        ],
    }
    with caplog.at_level(logging.INFO):
        out, stats = tokenize_examples([CONV, long], qs_tokenizer, template, cutoff_len=64)
    assert stats.truncated == 1
    assert len(out) == 2
    assert len(out[1]["input_ids"]) == 64
    assert any(label != -100 for label in out[1]["labels"])
    assert "1 of 2 examples were truncated to cutoff_len=64" in caplog.text


def test_cutoff_len_leaving_no_answer_tokens(qs_tokenizer, caplog):
    template = get_template("chatml")
    with pytest.raises(
        ConfigError, match=r"no example left .*1 with cutoff_len leaves no answer tokens.*raise cutoff_len"
    ):
        tokenize_examples([CONV], qs_tokenizer, template, cutoff_len=1)
    short = {**CONV, "system": "", "messages": CONV["messages"][2:]}
    # LLaMA-Factory's split gives a 13-token answer int(24 * 13 / (300 + 13)) = 0 tokens of 24
    long = {
        **CONV,
        "system": "x " * 300,
        "messages": [CONV["messages"][0], {"role": "assistant", "content": "ok " * 12}],
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out, stats = tokenize_examples([short, long], qs_tokenizer, template, cutoff_len=24)
    assert len(out) == 1
    assert stats.skipped == {"cutoff_len leaves no answer tokens": 1}
    assert "skipped 1 with cutoff_len leaves no answer tokens" in caplog.text
    with pytest.raises(
        ConfigError, match=r"example 1 \(toy\): cutoff_len leaves no answer tokens \(cutoff_len=24\)"
    ):
        tokenize_examples([short, long], qs_tokenizer, template, cutoff_len=24, strict=True)


def test_workers_give_identical_results(qs_tokenizer):
    from dataflex.data import load_dataset_examples

    # the quickstart's alpaca-format rows: a local check, it runs in any clone
    examples = load_dataset_examples("quickstart_train", QUICKSTART / "data", max_samples=40)
    template = get_template("llama3")
    one, s1 = tokenize_examples(examples, qs_tokenizer, template, cutoff_len=128)
    two, s2 = tokenize_examples(examples, qs_tokenizer, template, cutoff_len=128, num_workers=2)
    assert one == two
    assert s1 == s2


TOOL_CONV = {
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "function_call", "content": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"role": "observation", "content": '{"temp_c": -3, "sky": "snow"}'},
        {"role": "assistant", "content": "It is -3 C and snowing in Oslo."},
    ],
    "system": "",
    "tools": '[{"name": "weather", "parameters": {"city": {"type": "string"}}}]',
    "dataset": "toy",
    "subtask": "tools",
}


@pytest.mark.parametrize("template_name", ["llama3", None])
def test_tool_calls_are_trained_and_observations_masked(qs_tokenizer, template_name):
    """The local form of tests/data/test_shared_datasets.py's glaive check: it runs in any clone."""
    template = get_template(template_name, qs_tokenizer)
    (tok,), _ = tokenize_examples([TOOL_CONV], qs_tokenizer, template, cutoff_len=100_000)
    ids, labels = tok["input_ids"], tok["labels"]
    trained = qs_tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    call, observation, answer = (m["content"] for m in TOOL_CONV["messages"][1:])
    assert call in trained and answer in trained  # both assistant turns are learned
    assert observation not in trained and "Weather in Oslo?" not in trained
    text = qs_tokenizer.decode(ids)
    assert observation in text and "You have access to the following tools:" in text
    pairs = template.render_pairs(TOOL_CONV, bos=qs_tokenizer.bos_token, eos=qs_tokenizer.eos_token)
    assert len(pairs) == 2
    assert_masked_exactly(tok, pairs, qs_tokenizer)


def test_chat_template_that_refuses_a_role_is_a_clear_error(qs_tokenizer):
    import copy

    tok = copy.deepcopy(qs_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(
        ConfigError, match=r"cannot render a conversation with roles \['system'.*System role not supported"
    ):
        tokenize_examples([CONV], tok, get_template(None, tok), cutoff_len=100)


def test_chat_template_that_rewrites_history_is_refused(qs_tokenizer):
    import copy

    tok = copy.deepcopy(qs_tokenizer)
    # renders only the last two messages: earlier turns vanish as the conversation grows
    tok.chat_template = "{% for m in messages[-2:] %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match=r"does not render a conversation as a growing string"):
        tokenize_examples([{**CONV, "system": ""}], tok, get_template(None, tok), cutoff_len=100)

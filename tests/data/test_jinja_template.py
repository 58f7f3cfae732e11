"""Every named template written as a Jinja chat_template renders what dataflex trains on."""

from __future__ import annotations

import copy
import json

import pytest

from dataflex.data.jinja import template_to_jinja
from dataflex.data.templates import Template
from dataflex.errors import ConfigError
from dataflex.registry import TEMPLATES

TRICKY = 'naïve "quotes" \\ back {content} {eos} {% raw %} 中文\n'
TOOLS = [{"name": "add", "description": "Add numbers", "parameters": {"type": "object"}}]
CONVERSATIONS = {
    "one turn": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    "system, three turns": {
        "system": "Be brief. " + TRICKY,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": TRICKY},
            {"role": "assistant", "content": TRICKY},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
    },
    "tools": {
        "tools": json.dumps(TOOLS),
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "function_call", "content": '{"name": "add", "arguments": {"a": 2}}'},
            {"role": "observation", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ],
    },
}


@pytest.fixture
def tokenizer(qs_tokenizer):
    return copy.deepcopy(qs_tokenizer)  # its chat_template is replaced per test


def rendered(tokenizer, example, *, prompt_only: bool) -> str:
    """What ``apply_chat_template`` (transformers' own Jinja environment) renders."""
    messages = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    messages += example["messages"][:-1] if prompt_only else example["messages"]
    tools = json.loads(example["tools"]) if example.get("tools") else None
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=prompt_only
    )


def trained_on(template, tokenizer, example, *, prompt_only: bool) -> str:
    """The text dataflex trains on: the concatenated (prompt, answer) pairs of ``render_pairs``."""
    pairs = template.render_pairs(example, bos=tokenizer.bos_token, eos=tokenizer.eos_token)
    if prompt_only:
        return "".join(s + t for s, t in pairs[:-1]) + pairs[-1][0]
    return "".join(s + t for s, t in pairs)


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", TEMPLATES.names())
def test_every_shipped_template_renders_as_it_trains(name, conversation, tokenizer):
    template = TEMPLATES.get(name)
    tokenizer.chat_template = template_to_jinja(template, tokenizer.bos_token, tokenizer.eos_token)
    example = CONVERSATIONS[conversation]
    for prompt_only in (False, True):
        want = trained_on(template, tokenizer, example, prompt_only=prompt_only)
        assert rendered(tokenizer, example, prompt_only=prompt_only) == want
    # token ids too: the generation prompt tokenises as the prompt dataflex encoded
    prompt = trained_on(template, tokenizer, example, prompt_only=True)
    messages = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    ids = tokenizer.apply_chat_template(
        messages + example["messages"][:-1],
        tools=json.loads(example["tools"]) if example.get("tools") else None,
        add_generation_prompt=True,
        return_dict=False,
    )
    assert ids == tokenizer.encode(prompt, add_special_tokens=False)


def test_a_user_template_with_jinja_syntax_in_its_slots(tokenizer):
    odd = Template(
        name="odd",
        prefix="{bos}{# not a comment #}",
        system="<sys>{content}'\"\\</sys>",
        user="{% if x %}<u>{content}</u>{{ y }} C:\\new\\u00e9 ",  # backslash escapes stay literal
        assistant="{content}{eos}ü",
        separator="\n--\n",
        default_system="default 'system'",
        system_in_user=True,
    )
    tokenizer.chat_template = template_to_jinja(odd, tokenizer.bos_token, tokenizer.eos_token)
    for example in CONVERSATIONS.values():
        for prompt_only in (False, True):
            want = trained_on(odd, tokenizer, example, prompt_only=prompt_only)
            assert rendered(tokenizer, example, prompt_only=prompt_only) == want


def test_a_template_needing_a_token_the_tokenizer_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"template 'alpaca' needs the tokenizer's eos token"):
        template_to_jinja(TEMPLATES.get("alpaca"), bos=None, eos=None)
    template_to_jinja(TEMPLATES.get("chatml"), bos=None, eos=None)  # chatml needs neither

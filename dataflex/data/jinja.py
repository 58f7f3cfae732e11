"""A named :class:`~dataflex.data.templates.Template` as a Jinja ``chat_template``.

``dataflex-cli export`` writes it into the exported tokenizer, so that
``tokenizer.apply_chat_template(messages, tools=...)`` on the exported model renders
exactly the text dataflex trained on: the Jinja code is a transcription of
:meth:`Template.render_pairs`, with the tokenizer's BOS/EOS strings written in.

The generated code has no text outside its ``{{ }}`` / ``{% %}`` tags, so the
``trim_blocks``/``lstrip_blocks`` whitespace rules of transformers' Jinja
environment cannot change it. Messages are read by position, as ``render_pairs``
does: even positions (after an optional leading ``system`` message) are queries
(``tool``/``observation`` take the observation slot), odd positions are answers
(``function_call`` takes the function-call slot). A conversation that ends with a
query renders its prompt, which already ends with the assistant header, so
``add_generation_prompt`` adds nothing.
"""

from __future__ import annotations

import json

from dataflex.data.templates import TOOLS_HEADER, Template
from dataflex.errors import ConfigError


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja decodes literals with Python's escapes)."""
    return json.dumps(text, ensure_ascii=False)


def template_to_jinja(template: Template, bos: str | None = None, eos: str | None = None) -> str:
    """The Jinja ``chat_template`` that renders conversations as ``template.render_pairs`` does.

    Args:
        template: A named template.
        bos: The tokenizer's BOS token (needed when a slot has ``{bos}``).
        eos: The tokenizer's EOS token (needed when a slot has ``{eos}``).

    Raises:
        ConfigError: a slot needs a BOS/EOS token the tokenizer does not have.
    """

    def slot(text: str) -> str:
        return _literal(template.fill_special_tokens(text, bos, eos))

    user = slot(template.user)
    observation = slot(template.observation or template.user)
    assistant = slot(template.assistant)
    function_call = slot(template.function_call or template.assistant)
    prefix = _literal(template.fill_special_tokens(template.prefix, bos, eos).replace("{content}", ""))
    system_slot = slot(template.system)
    parts = [
        f"{{%- set ns = namespace(system={_literal(template.default_system)}, start=0) -%}}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set ns.start = 1 -%}",
        "{%- if messages[0]['content'] -%}{%- set ns.system = messages[0]['content'] -%}{%- endif -%}",
        "{%- endif -%}",
        "{%- if tools -%}",
        "{%- if ns.system -%}{%- set ns.system = ns.system + '\\n\\n' -%}{%- endif -%}",
        f"{{%- set ns.system = ns.system + {_literal(TOOLS_HEADER)} + (tools | tojson) -%}}",
        "{%- endif -%}",
        "{%- set ns.system_text = '' -%}",
        "{%- if ns.system -%}",
        f"{{%- set ns.system_text = {system_slot} | replace('{{content}}', ns.system) -%}}",
        "{%- endif -%}",
        "{%- for message in messages[ns.start:] -%}",
        "{%- if loop.index0 % 2 == 0 -%}",
        f"{{%- set query = {observation} if message['role'] in ('tool', 'observation') else {user} -%}}",
        "{%- if loop.first -%}",
    ]
    if template.system_in_user:
        parts.append(
            f"{{{{- {prefix} + (query | replace('{{content}}', ns.system_text + message['content'])) -}}}}"
        )
    else:
        parts.append(
            f"{{{{- {prefix} + ns.system_text + (query | replace('{{content}}', message['content'])) -}}}}"
        )
    parts += [
        "{%- else -%}",
        f"{{{{- {_literal(template.separator)} + (query | replace('{{content}}', message['content'])) -}}}}",
        "{%- endif -%}",
        "{%- else -%}",
        f"{{%- set answer = {function_call} if message['role'] == 'function_call' else {assistant} -%}}",
        "{{- answer | replace('{content}', message['content']) -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
    return "".join(parts)


#: Conversations every exported chat_template must render as ``render_pairs`` does.
PROBES: tuple[dict, ...] = (
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
    },
    {
        "system": "Use the tools.",
        "tools": '[{"name": "add", "description": "Add two numbers", "parameters": {"type": "object"}}]',
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "function_call", "content": '{"name": "add", "arguments": {"a": 2, "b": 2}}'},
            {"role": "observation", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ],
    },
)


def chat_messages(example: dict) -> tuple[list[dict], list | None]:
    """``example`` (the readers' form) as ``apply_chat_template``'s ``messages`` and ``tools``."""
    messages = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    messages += [dict(m) for m in example["messages"]]
    tools = json.loads(example["tools"]) if example.get("tools") else None
    return messages, tools


def check_chat_template(template: Template, tokenizer: object) -> None:
    """Refuse a ``tokenizer.chat_template`` that renders a probe conversation unlike ``template``.

    Each of :data:`PROBES` is rendered whole and, without its last answer, as a prompt
    (``add_generation_prompt=True``), through ``tokenizer.apply_chat_template``, and
    compared with :meth:`Template.render_pairs`.

    Raises:
        ConfigError: naming the template and the first conversation that differs.
    """
    bos, eos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)
    for example in PROBES:
        pairs = template.render_pairs(example, bos=bos, eos=eos)
        messages, tools = chat_messages(example)
        whole = "".join(s + t for s, t in pairs)
        prompt = "".join(s + t for s, t in pairs[:-1]) + pairs[-1][0]
        for want, msgs, generation in ((whole, messages, False), (prompt, messages[:-1], True)):
            got = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                msgs, tools=tools, tokenize=False, add_generation_prompt=generation
            )
            if got != want:
                raise ConfigError(
                    f"template {template.name!r} cannot be written faithfully as a Jinja chat_template: "
                    f"the conversation with roles {[m['role'] for m in msgs]} renders as {got!r}, but "
                    f"dataflex trains on {want!r}. Export with template: tokenizer (the tokenizer's own "
                    "chat template is kept) or leave template unset."
                )

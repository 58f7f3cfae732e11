"""Reading Alpaca and ShareGPT rows into one conversation form.

Every example becomes ``{"messages": [{"role", "content"}], "system", "tools",
"dataset", ...}`` where roles are ``user``, ``assistant``, ``function_call`` and
``observation``; user-like turns (user, observation) alternate with assistant-like
turns (assistant, function_call), starting with a user-like turn and ending with an
assistant-like one. Every assistant-like turn is trained on.
"""

from __future__ import annotations

import json
from typing import Any

from dataflex.data.dataset_info import DatasetAttr

USER_LIKE = ("user", "observation")
ASSISTANT_LIKE = ("assistant", "function_call")


class RowError(ValueError):
    """One row cannot be used (skipped and counted, or fatal under ``strict``)."""


def _text(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    return value


def required_columns(attr: DatasetAttr) -> list[str]:
    """Columns every row of ``attr`` needs."""
    if attr.formatting == "alpaca":
        return [attr.columns.prompt, attr.columns.response]
    return [attr.columns.messages]


def convert_row(row: object, attr: DatasetAttr) -> dict[str, Any]:
    """Convert one raw row to the conversation form.

    Raises:
        RowError: the row is malformed (not an object, missing column, empty answer,
            bad turn order).
    """
    if not isinstance(row, dict):
        raise RowError(f"row is a JSON {type(row).__name__}, expected an object")
    cols = attr.columns
    for col in required_columns(attr):
        if col not in row:
            raise RowError(f"missing column {col!r}")
    example = _convert_alpaca(row, attr) if attr.formatting == "alpaca" else _convert_sharegpt(row, attr)
    example["dataset"] = attr.name
    if cols.subtask in row and row[cols.subtask] is not None:
        example["subtask"] = str(row[cols.subtask])
    return example


def _convert_alpaca(row: dict, attr: DatasetAttr) -> dict[str, Any]:
    cols = attr.columns
    messages: list[dict[str, str]] = []
    if cols.history and row.get(cols.history):
        history = row[cols.history]
        if not isinstance(history, list):
            raise RowError(f"{cols.history!r} must be a list of [question, answer] pairs")
        for turn in history:
            if not (isinstance(turn, list | tuple) and len(turn) == 2):
                raise RowError(f"{cols.history!r} must be a list of [question, answer] pairs")
            q, a = _text(turn[0], "history question"), _text(turn[1], "history answer")
            if not a.strip():
                raise RowError("empty answer in history")
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    prompt = _text(row.get(cols.prompt), cols.prompt)
    query = _text(row.get(cols.query), cols.query)
    content = f"{prompt}\n{query}" if prompt and query else (prompt or query)
    if not content.strip():
        raise RowError(f"empty prompt ({cols.prompt!r} and {cols.query!r})")
    response = _text(row.get(cols.response), cols.response)
    if not response.strip():
        raise RowError(f"empty answer ({cols.response!r})")
    messages += [{"role": "user", "content": content}, {"role": "assistant", "content": response}]
    system = _text(row.get(cols.system), cols.system) if cols.system else ""
    return {"messages": messages, "system": system, "tools": ""}


_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "observation": "observation",
    "tool": "observation",
    "function_call": "function_call",
    "system": "system",
}


def _convert_sharegpt(row: dict, attr: DatasetAttr) -> dict[str, Any]:
    cols, tags = attr.columns, attr.tags
    turns = row[cols.messages]
    if not isinstance(turns, list) or not turns:
        raise RowError(f"{cols.messages!r} must be a non-empty list of messages")
    role_map = {
        tags.user_tag: "user",
        tags.assistant_tag: "assistant",
        tags.observation_tag: "observation",
        tags.function_tag: "function_call",
        tags.system_tag: "system",
    }
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise RowError("every message must be an object")
        if tags.role_tag in turn:  # configured tags (from/value by default)
            raw_role, content = turn[tags.role_tag], turn.get(tags.content_tag)
            role = role_map.get(raw_role)
        elif "role" in turn:  # the OpenAI form, accepted without configuring tags
            raw_role, content = turn["role"], turn.get("content")
            role = _ROLE_ALIASES.get(raw_role)
        else:
            raise RowError(f"message without a {tags.role_tag!r} or 'role' key")
        if role is None:
            raise RowError(f"unknown role {raw_role!r}")
        messages.append({"role": role, "content": _text(content, "message content")})

    system = _text(row.get(cols.system), cols.system) if cols.system else ""
    if messages[0]["role"] == "system":
        system = system or messages[0]["content"]
        messages = messages[1:]
    if not messages:
        raise RowError("no messages besides the system prompt")
    for i, msg in enumerate(messages):
        expected = USER_LIKE if i % 2 == 0 else ASSISTANT_LIKE
        if msg["role"] not in expected:
            raise RowError(
                f"message {i} has role {msg['role']!r}; turns must alternate user/observation and "
                "assistant/function_call, starting with a user turn"
            )
    if len(messages) % 2:
        raise RowError("the conversation ends with a user turn (no answer to train on)")
    for msg in messages[1::2]:
        if not msg["content"].strip():
            raise RowError("empty answer (an assistant turn has no content)")
    tools = row.get(cols.tools) if cols.tools else None
    if tools is not None and not isinstance(tools, str):
        tools = json.dumps(tools, ensure_ascii=False)
    if tools and tools.strip() in ("[]", "{}"):
        tools = ""
    return {"messages": messages, "system": system, "tools": tools or ""}

r"""Chat templates: turning a conversation into (prompt, answer) text pairs.

A template renders a conversation as a list of ``(source, target)`` string pairs, one
per assistant turn: ``source`` is everything since the previous answer (system prompt,
user turn, the assistant header) and gets label -100; ``target`` is the answer and its
end-of-turn marker and is trained on.

Named templates follow LLaMA-Factory's formats for the same names, ``default`` included
(LLaMA-Factory's ``Human: ...\nAssistant:`` template), so that a LLaMA-Factory config
trains on the same text here. ``template: tokenizer`` (or no ``template``, as in
LLaMA-Factory) uses the tokenizer's own Jinja chat template, split into pairs by
rendering growing prefixes of the conversation.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dataflex.errors import ConfigError, did_you_mean
from dataflex.registry import TEMPLATES

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: ``template:`` value (and the meaning of no ``template``) for the tokenizer's chat template.
TOKENIZER_TEMPLATE = "tokenizer"
TOOLS_HEADER = "You have access to the following tools:\n"


def tools_block(tools: str) -> str:
    """The text a named template adds to the system prompt when a row has ``tools``."""
    try:
        parsed = json.loads(tools)
        body = json.dumps(parsed, ensure_ascii=False)
    except json.JSONDecodeError:
        body = tools
    return TOOLS_HEADER + body


@dataclass(frozen=True)
class Template:
    """A named, string-slot chat template.

    Slots contain ``{content}`` and may contain ``{bos}`` / ``{eos}``, replaced by the
    tokenizer's BOS/EOS tokens. ``special_tokens`` must each be one token of the
    tokenizer (:func:`check_template_tokens` warns otherwise).

    Attributes:
        name: Registry name.
        prefix: Text before everything (e.g. ``"{bos}"``).
        system: Slot of the system block.
        user: Slot of a user turn, including the assistant header that follows it.
        assistant: Slot of an answer, including its end-of-turn marker.
        observation: Slot of a tool result turn (defaults to ``user``).
        function_call: Slot of a tool call answer (defaults to ``assistant``).
        default_system: System prompt used when a row has none.
        separator: Text before every user turn but the first (part of the prompt).
        system_in_user: Put the system block inside the first user turn (Llama-2/Mistral).
        special_tokens: Literal tokens the tokenizer must know.
        description: One line shown by ``dataflex-cli list templates``.
    """

    name: str
    user: str
    assistant: str
    prefix: str = ""
    system: str = "{content}"
    observation: str | None = None
    function_call: str | None = None
    default_system: str = ""
    separator: str = ""
    system_in_user: bool = False
    special_tokens: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""

    def fill_special_tokens(self, slot: str, bos: str | None, eos: str | None) -> str:
        """``slot`` with ``{bos}``/``{eos}`` replaced by the tokenizer's tokens.

        Raises:
            ConfigError: if the slot needs a token the tokenizer does not have.
        """
        for key, token in (("{bos}", bos), ("{eos}", eos)):
            if key in slot:
                if token is None:
                    raise ConfigError(
                        f"template {self.name!r} needs the tokenizer's {key[1:-1]} token, but the "
                        "tokenizer has none."
                    )
                slot = slot.replace(key, token)
        return slot

    def render_pairs(
        self, example: dict[str, Any], bos: str | None = None, eos: str | None = None
    ) -> list[tuple[str, str]]:
        """Render ``example`` (the reader's conversation form) as (source, target) pairs."""

        def fill(slot: str, content: str) -> str:
            return self.fill_special_tokens(slot, bos, eos).replace("{content}", content)

        system = example.get("system") or self.default_system
        if example.get("tools"):
            system = "\n\n".join(s for s in (system, tools_block(example["tools"])) if s)
        system_text = fill(self.system, system) if system else ""
        pairs: list[tuple[str, str]] = []
        messages = example["messages"]
        for i in range(0, len(messages), 2):
            query, answer = messages[i], messages[i + 1]
            slot = self.observation if query["role"] == "observation" else None
            source = fill(slot or self.user, query["content"])
            if i > 0:
                source = self.separator + source
            if i == 0:
                if self.system_in_user:
                    source = fill(slot or self.user, system_text + query["content"])
                else:
                    source = system_text + source
                source = fill(self.prefix, "") + source
            slot = self.function_call if answer["role"] == "function_call" else None
            pairs.append((source, fill(slot or self.assistant, answer["content"])))
        return pairs


class ChatTemplate:
    """The tokenizer's own Jinja chat template, split into (source, target) pairs.

    Each answer's span is found by rendering the conversation up to the answer with
    ``add_generation_prompt=True`` and again including the answer; the template must
    render growing conversations as growing strings (most do).
    """

    name = TOKENIZER_TEMPLATE
    special_tokens: tuple[str, ...] = ()

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template, so "
                f"template: {TOKENIZER_TEMPLATE} cannot be used; set template: to one of "
                f"{', '.join(list_templates())}."
            )
        self.tokenizer = tokenizer
        self.supports_tools = "tools" in str(tokenizer.chat_template)
        self._warned_tools = False

    def _render(self, messages: list[dict], tools: list | None, generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return cast(  # tokenize=False: the rendered string
                str,
                self.tokenizer.apply_chat_template(
                    messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
                ),
            )
        except TemplateError as exc:
            roles = [m["role"] for m in messages]
            raise ConfigError(
                f"the tokenizer's chat template cannot render a conversation with roles {roles}: {exc}; "
                f"set template: to one of {', '.join(list_templates())}."
            ) from None

    def render_pairs(
        self, example: dict[str, Any], bos: str | None = None, eos: str | None = None
    ) -> list[tuple[str, str]]:
        """Render ``example`` with the tokenizer's chat template as (source, target) pairs."""
        system = example.get("system") or ""
        tools = None
        if example.get("tools"):
            if self.supports_tools:
                try:
                    tools = json.loads(example["tools"])
                except json.JSONDecodeError:
                    tools = None
            if tools is None:
                if not self._warned_tools:
                    logger.info("the chat template does not take tools; putting them in the system prompt")
                    self._warned_tools = True
                system = "\n\n".join(s for s in (system, tools_block(example["tools"])) if s)
        role_names = {"user": "user", "assistant": "assistant", "function_call": "assistant"}
        msgs = [{"role": "system", "content": system}] if system else []
        msgs += [
            {"role": role_names.get(m["role"], "tool"), "content": m["content"]} for m in example["messages"]
        ]
        offset = len(msgs) - len(example["messages"])
        pairs, done = [], ""
        for i in range(1, len(example["messages"]), 2):
            before = self._render(msgs[: offset + i], tools, True)
            after = self._render(msgs[: offset + i + 1], tools, False)
            if not (before.startswith(done) and after.startswith(before)):
                raise ConfigError(
                    "the tokenizer's chat template does not render a conversation as a growing string "
                    "(it rewrites earlier turns), so prompt and answer tokens cannot be told apart; "
                    f"set template: to one of {', '.join(list_templates())}."
                )
            pairs.append((before[len(done) :], after[len(before) :]))
            done = after
        return pairs


def register_template(template: Template, *, overwrite: bool = False) -> Template:
    """Add a named template (``template: <name>`` in configs) to :data:`~dataflex.registry.TEMPLATES`.

    Call it from a ``plugins:`` module to make the template usable from a config.

    Raises:
        RegistryError: the name is taken by another template (unless ``overwrite``).
        ConfigError: the name is ``"tokenizer"`` (the tokenizer's own chat template).
    """
    if template.name == TOKENIZER_TEMPLATE:
        raise ConfigError(
            f"template name {TOKENIZER_TEMPLATE!r} is reserved for the tokenizer's own chat template."
        )
    return TEMPLATES.add(template.name, template, overwrite=overwrite)


def list_templates(pattern: str | None = None) -> list[str]:
    """Every valid ``template:`` value (``tokenizer`` = the tokenizer's chat template), optionally globbed."""
    names = [TOKENIZER_TEMPLATE, *TEMPLATES.names()]
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def check_template_name(name: str | None) -> None:
    """Raise a :class:`ConfigError` (closest names suggested) if ``name`` is not a template."""
    if name is not None and name != TOKENIZER_TEMPLATE and name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r}." + did_you_mean(name, list_templates()))


def get_template(
    name: str | None, tokenizer: PreTrainedTokenizerBase | None = None
) -> Template | ChatTemplate:
    """The template called ``name``; ``None``/``"tokenizer"`` → the tokenizer's chat template.

    Raises:
        ConfigError: unknown name (closest suggested), or the default is asked for without a
            tokenizer or with one that has no chat template.
    """
    check_template_name(name)
    if name is None or name == TOKENIZER_TEMPLATE:
        if tokenizer is None:
            raise ConfigError(f"template: {TOKENIZER_TEMPLATE} needs the tokenizer (its chat template).")
        return ChatTemplate(tokenizer)
    return TEMPLATES.get(name)


def split_template_tokens(
    template: Template | ChatTemplate, tokenizer: PreTrainedTokenizerBase
) -> dict[str, int]:
    """The literal special tokens of ``template`` that ``tokenizer`` does not encode as one token.

    Returns:
        Token → number of pieces it is split into (empty when every token is whole).
    """
    split = {}
    for token in template.special_tokens:
        pieces = len(tokenizer.encode(token, add_special_tokens=False))
        if pieces != 1:
            split[token] = pieces
    return split


_warned_split: set[tuple[str, str]] = set()


def check_template_tokens(template: Template | ChatTemplate, tokenizer: PreTrainedTokenizerBase) -> None:
    """Warn (once per template and tokenizer) when the template's special tokens are not single tokens.

    ``llama3`` on a ChatML tokenizer, for instance, turns ``<|start_header_id|>`` into a
    run of byte tokens: training still works, but on text the model never saw.
    """
    split = split_template_tokens(template, tokenizer)
    name = str(getattr(tokenizer, "name_or_path", "?"))
    if not split or (template.name, name) in _warned_split:
        return
    _warned_split.add((template.name, name))
    pieces = ", ".join(f"{tok} -> {n} tokens" for tok, n in split.items())
    logger.warning(
        "template %r: the tokenizer of %r does not know its special tokens as single tokens (%s), so "
        "the model trains on them as plain text. Use the template the model was trained with "
        "(template: %s uses the tokenizer's own chat template).",
        template.name,
        name,
        pieces,
        TOKENIZER_TEMPLATE,
    )


_LLAMA3_HEADER = "<|start_header_id|>{role}<|end_header_id|>\n\n"
_IM = "<|im_start|>{role}\n"

for _t in (
    Template(
        name="llama3",
        description="Llama 3 headers (<|start_header_id|>role<|end_header_id|>), turns end with <|eot_id|>",
        prefix="{bos}",
        system=_LLAMA3_HEADER.format(role="system") + "{content}<|eot_id|>",
        user=_LLAMA3_HEADER.format(role="user")
        + "{content}<|eot_id|>"
        + _LLAMA3_HEADER.format(role="assistant"),
        assistant="{content}<|eot_id|>",
        observation=_LLAMA3_HEADER.format(role="ipython")
        + "{content}<|eot_id|>"
        + _LLAMA3_HEADER.format(role="assistant"),
        special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    Template(
        name="chatml",
        description="ChatML (<|im_start|>role ... <|im_end|>), tool results as the tool role",
        system=_IM.format(role="system") + "{content}<|im_end|>\n",
        user=_IM.format(role="user") + "{content}<|im_end|>\n" + _IM.format(role="assistant"),
        assistant="{content}<|im_end|>\n",
        observation=_IM.format(role="tool") + "{content}<|im_end|>\n" + _IM.format(role="assistant"),
        special_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    Template(
        name="qwen",
        description="ChatML with Qwen's default system prompt and <tool_call>/<tool_response> blocks",
        system=_IM.format(role="system") + "{content}<|im_end|>\n",
        user=_IM.format(role="user") + "{content}<|im_end|>\n" + _IM.format(role="assistant"),
        assistant="{content}<|im_end|>\n",
        observation=_IM.format(role="user")
        + "<tool_response>\n{content}\n</tool_response><|im_end|>\n"
        + _IM.format(role="assistant"),
        function_call="<tool_call>\n{content}\n</tool_call><|im_end|>\n",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        special_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    Template(
        name="mistral",
        description="Mistral / Llama 2 [INST] ... [/INST], system prompt inside the first user turn",
        prefix="{bos}",
        system="{content}\n\n",
        user="[INST] {content}[/INST]",
        assistant=" {content}{eos}",
        observation="[TOOL_RESULTS] {content}[/TOOL_RESULTS]",
        system_in_user=True,
    ),
    Template(
        name="alpaca",
        description="Alpaca's ### Instruction: / ### Response: with its default system prompt",
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n### Response:\n",
        assistant="{content}{eos}\n\n",
        default_system=(
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
        ),
    ),
    Template(
        name="empty",
        description="no markup: the prompt as it is, the answer followed by EOS",
        user="{content}",
        assistant="{content}{eos}",
    ),
    # LLaMA-Factory's `default`: not the tokenizer's template (that is `tokenizer` here).
    Template(
        name="default",
        description="LLaMA-Factory's default: Human: ... Assistant:",
        system="{content}\n",
        user="Human: {content}\nAssistant:",
        assistant="{content}{eos}",
        separator="\n",
    ),
):
    register_template(_t)

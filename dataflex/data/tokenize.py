"""Tokenising conversations with prompt masking and ``cutoff_len`` truncation.

Each (source, target) pair of the rendered template is encoded on its own (no special
tokens added by the tokenizer: the template supplies them) and concatenated; source
tokens get label -100, target tokens are their own labels. Truncation follows
LLaMA-Factory's rule so that results match what users had there: turn by turn, the
remaining budget is split between source and target in proportion to their lengths
(:func:`infer_seqlen`), keeping the beginning of each.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dataflex.data.collator import IGNORE_INDEX
from dataflex.data.templates import ChatTemplate, Template, check_template_tokens
from dataflex.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

META_KEYS = ("dataset", "subtask")


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How many source and target tokens of one turn fit in ``cutoff_len`` (LLaMA-Factory's rule)."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


@dataclass
class TokenizeStats:
    """What tokenisation did: kept rows, truncations, and skipped rows by reason.

    Attributes:
        kept: Examples tokenised.
        truncated: Examples cut to ``cutoff_len``.
        skipped: Skipped examples by reason.
        kept_indices: Position in the input of each tokenised example, in order.
    """

    kept: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    kept_indices: list[int] = field(default_factory=list)

    def merge(self, other: TokenizeStats) -> None:
        self.kept += other.kept
        self.truncated += other.truncated
        self.skipped.update(other.skipped)


def _bos_eos(tokenizer: PreTrainedTokenizerBase) -> tuple[str | None, str | None]:
    return getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)


def tokenize_one(
    example: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    template: Template | ChatTemplate,
    cutoff_len: int,
) -> tuple[dict[str, Any] | None, str | None, bool]:
    """Tokenise one conversation.

    Returns:
        ``(tokenised, None, truncated)`` or ``(None, reason, truncated)`` when no answer
        token survives ``cutoff_len``.
    """
    bos, eos = _bos_eos(tokenizer)
    pairs = template.render_pairs(example, bos=bos, eos=eos)
    input_ids: list[int] = []
    labels: list[int] = []
    truncated = False
    for source, target in pairs:
        src = tokenizer.encode(source, add_special_tokens=False, verbose=False)
        tgt = tokenizer.encode(target, add_special_tokens=False, verbose=False)
        budget = cutoff_len - len(input_ids)
        if budget <= 0:
            truncated = True
            break
        s_len, t_len = infer_seqlen(len(src), len(tgt), budget)
        truncated |= s_len < len(src) or t_len < len(tgt)
        input_ids += src[:s_len] + tgt[:t_len]
        labels += [IGNORE_INDEX] * s_len + tgt[:t_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None, "cutoff_len leaves no answer tokens", truncated
    out: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
    for key in META_KEYS:
        if key in example:
            out[key] = example[key]
    return out, None, truncated


def _tokenize_chunk(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    template: Template | ChatTemplate,
    cutoff_len: int,
) -> tuple[list[tuple[int, dict[str, Any] | None, str | None]], TokenizeStats]:
    stats = TokenizeStats()
    results = []
    for i, example in enumerate(examples):
        out, reason, truncated = tokenize_one(example, tokenizer, template, cutoff_len)
        stats.truncated += int(truncated)
        if out is None:
            stats.skipped[reason] += 1
        else:
            stats.kept += 1
        results.append((i, out, reason))
    return results, stats


def tokenize_examples(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    template: Template | ChatTemplate,
    cutoff_len: int,
    *,
    num_workers: int | None = None,
    strict: bool = False,
    name: str = "dataset",
) -> tuple[list[dict[str, Any]], TokenizeStats]:
    """Tokenise conversations into ``{input_ids, labels, dataset[, subtask]}`` dicts.

    Args:
        examples: Conversations from :func:`dataflex.data.load_dataset_examples`.
        tokenizer: A Hugging Face tokenizer.
        template: From :func:`dataflex.data.get_template`.
        cutoff_len: Maximum tokens per example (truncated, never dropped silently).
        num_workers: Processes for tokenisation (``preprocessing_num_workers``); results
            are identical to one process.
        strict: Fail on the first example that loses all answer tokens instead of
            skipping it.
        name: What to call the data in messages (e.g. ``"train dataset"``).

    Returns:
        The tokenised examples (order kept) and what happened.

    Raises:
        ConfigError: ``cutoff_len`` < 1; an example without answer tokens under
            ``strict``; no example left. (A template token the tokenizer splits is a
            warning, :func:`~dataflex.data.templates.check_template_tokens`.)
    """
    if cutoff_len < 1:
        raise ConfigError(f"cutoff_len must be >= 1, got {cutoff_len}.")
    check_template_tokens(template, tokenizer)
    workers = max(1, int(num_workers or 1))
    if workers > 1 and len(examples) >= 2 * workers:
        size = (len(examples) + workers - 1) // workers
        chunks = [examples[i : i + size] for i in range(0, len(examples), size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(
                pool.map(
                    _tokenize_chunk,
                    chunks,
                    [tokenizer] * len(chunks),
                    [template] * len(chunks),
                    [cutoff_len] * len(chunks),
                )
            )
        offsets = range(0, len(examples), size)
    else:
        parts = [_tokenize_chunk(examples, tokenizer, template, cutoff_len)]
        offsets = range(0, 1)

    tokenised: list[dict[str, Any]] = []
    stats = TokenizeStats()
    for offset, (results, part_stats) in zip(offsets, parts):
        stats.merge(part_stats)
        for i, out, reason in results:
            if out is None:
                if strict:
                    raise ConfigError(
                        f"{name}: example {offset + i} ({examples[offset + i].get('dataset', '?')}): "
                        f"{reason} (cutoff_len={cutoff_len}); raise cutoff_len, or set strict: false to "
                        "skip such examples."
                    )
                continue
            tokenised.append(out)
            stats.kept_indices.append(offset + i)
    if stats.truncated:
        logger.info(
            "%s: %d of %d examples were truncated to cutoff_len=%d tokens.",
            name,
            stats.truncated,
            len(examples),
            cutoff_len,
        )
    if stats.skipped:
        logger.warning("%s: skipped %s.", name, _describe(stats.skipped))
    if not tokenised:
        raise ConfigError(
            f"{name}: no example left after tokenisation ({_describe(stats.skipped)}); "
            f"cutoff_len={cutoff_len} leaves no answer tokens: raise cutoff_len."
        )
    return tokenised, stats


def _describe(skipped: Counter) -> str:
    return ", ".join(f"{n} with {reason}" for reason, n in skipped.most_common()) or "nothing skipped"

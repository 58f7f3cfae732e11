"""Building the tokenised train and eval datasets of a training config."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dataflex.data.loader import load_attr_examples, resolve_datasets
from dataflex.data.sft_dataset import SFTDataset
from dataflex.data.templates import ChatTemplate, Template, get_template
from dataflex.data.tokenize import TokenizeStats, tokenize_examples
from dataflex.train.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The datasets of a run and a JSON-able report of how they were built."""

    train: SFTDataset
    eval: SFTDataset | None
    report: dict[str, Any] = field(default_factory=dict)


def _build(
    names: list[str],
    cfg: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    template: Template | ChatTemplate,
    what: str,
) -> tuple[SFTDataset, TokenizeStats, Counter[str], int]:
    attrs = resolve_datasets(names, cfg.dataset_dir)  # every name checked before reading any file
    examples: list[dict[str, Any]] = []
    load_skipped: Counter[str] = Counter()
    for attr in attrs:
        examples += load_attr_examples(
            attr, max_samples=cfg.max_samples, strict=cfg.strict, skipped_out=load_skipped
        )
    tokenised, stats = tokenize_examples(
        examples,
        tokenizer,
        template,
        cfg.cutoff_len,
        num_workers=cfg.preprocessing_num_workers,
        strict=cfg.strict,
        name=what,
    )
    return SFTDataset(tokenised), stats, load_skipped, len(examples) + sum(load_skipped.values())


def _report(ds: SFTDataset, stats: TokenizeStats, load_skipped: Counter[str], n_rows: int) -> dict[str, Any]:
    total, trained = ds.num_tokens()
    return {
        "examples": len(ds),
        "rows_read": n_rows,
        "truncated": stats.truncated,
        "skipped": dict(stats.skipped),
        "skipped_at_load": dict(load_skipped),  # rows that could not be converted (bad fields)
        "tokens": total,
        "trained_tokens": trained,
        "by_dataset": ds.composition("dataset"),
        "by_subtask": ds.composition("subtask") if any("subtask" in e for e in ds.examples) else {},
    }


def prepare_datasets(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> PreparedData:
    """Load, render and tokenise ``dataset`` and ``eval_dataset`` (all checks before any model work).

    Raises:
        ConfigError: any bad dataset input (see :func:`dataflex.data.load_dataset_examples`
            and :func:`dataflex.data.tokenize_examples`) or an unusable template.
    """
    template = get_template(cfg.template, tokenizer)
    if cfg.eval_dataset:
        resolve_datasets(cfg.eval_dataset, cfg.dataset_dir)  # fail on a bad eval name before reading train
    train, train_stats, train_load, train_rows = _build(
        cfg.dataset, cfg, tokenizer, template, "train dataset"
    )
    report = {
        "template": template.name,
        "cutoff_len": cfg.cutoff_len,
        "train": _report(train, train_stats, train_load, train_rows),
    }
    eval_ds = None
    if cfg.eval_dataset:
        eval_ds, eval_stats, eval_load, eval_rows = _build(
            cfg.eval_dataset, cfg, tokenizer, template, "eval dataset"
        )
        report["eval"] = _report(eval_ds, eval_stats, eval_load, eval_rows)
    logger.info("train dataset: %d examples %s", len(train), train.composition())
    return PreparedData(train=train, eval=eval_ds, report=report)

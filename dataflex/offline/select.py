"""``dataflex-cli select``: score a pool once and write the chosen subset, ready to train on.

The four steps of the LESS paper: (1) a warm-up training run saved checkpoints
with their optimizer state, (2) per checkpoint, Adam features of the pool and
gradient features of the validation set are projected, (3) the per-subtask mean
cosines are combined over checkpoints with learning-rate weights normalised to
sum to one, then the max over subtasks is the score, (4) the top examples are
written as a dataset. That is the path of every selector with the
:class:`~dataflex.selectors.base.ScoresCandidates` capability (``less``, ``nice``); the
others make one :meth:`~dataflex.selectors.base.Selector.select` call on the last
checkpoint (or the base model). Each selector's own
:meth:`~dataflex.selectors.base.Selector.preflight` runs on the tokenised pool before
any model loads, as in training.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dataflex.checks import check_device
from dataflex.configs.components import load_components
from dataflex.data.collator import SFTDataCollator
from dataflex.data.loader import resolve_datasets
from dataflex.data.sft_dataset import composition
from dataflex.data.templates import get_template
from dataflex.distributed import DistributedView
from dataflex.errors import ConfigError
from dataflex.gradients import AdamState
from dataflex.io import (
    OutputLock,
    atomic_write_text,
    check_inputs_whole,
    check_replaceable,
    check_writable_dir,
    write_marker,
)
from dataflex.offline.config import OfflineSelectConfig
from dataflex.offline.data import (
    OfflineDataset,
    load_offline_dataset,
    subset_file_name,
    write_jsonl,
    write_subset,
)
from dataflex.selectors.base import (
    CandidateScores,
    PreflightPlan,
    ScoresCandidates,
    Selection,
    SelectionContext,
    Selector,
)
from dataflex.selectors.scoring import summarize, top_n
from dataflex.train import model as train_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass
class OfflineResult:
    """What an offline selection produced."""

    indices: list[int]
    scores: torch.Tensor | None
    output_dir: Path
    report: dict[str, Any]


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _step_of(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    match = re.search(r"checkpoint-(\d+)$", str(checkpoint).rstrip("/"))
    return int(match.group(1)) if match else 0


def load_model(config: OfflineSelectConfig, checkpoint: str | None) -> torch.nn.Module:
    """The model to score with: a checkpoint (LoRA adapter or full weights) or the base model.

    Loaded by :mod:`dataflex.train.model`, as in training: LoRA weights are loaded
    trainable (and float32), so the gradient features cover exactly the adapter.
    """
    kwargs = {"dtype": getattr(torch, config.dtype), "trust_remote_code": config.trust_remote_code}
    if checkpoint is not None and not (Path(checkpoint) / "adapter_config.json").is_file():
        model = train_model.load_model(checkpoint, **kwargs)
        model.requires_grad_(True)
        return model
    model = train_model.load_model(config.model_name_or_path, **kwargs)
    adapter = checkpoint or config.adapter_name_or_path
    if adapter is None:
        model.requires_grad_(True)
        return model
    return train_model.load_adapter(model, adapter)


def check_before_work(config: OfflineSelectConfig, selector: Selector) -> None:
    """Every input check that needs no model or data, so bad input fails in seconds."""
    train_model.check_model_path(config.model_name_or_path, config.trust_remote_code)
    if config.adapter_name_or_path is not None:
        train_model.check_local_path(config.adapter_name_or_path, "adapter_name_or_path")
    for ckpt in config.checkpoints:
        if not Path(ckpt).is_dir():
            raise ConfigError(f"checkpoints: {ckpt!r} is not a folder.")
    check_inputs_whole([*config.checkpoints, config.adapter_name_or_path or ""], "checkpoints")
    check_device(config.device)
    check_writable_dir(config.output_dir, "output_dir")
    name = config.component_name
    if selector.requires_eval_dataset and config.eval_dataset is None:
        raise ConfigError(
            f"{name} scores the pool against a validation set, but eval_dataset is not set: name the "
            "target task's examples (a dataset_info.json name or a file)."
        )
    if isinstance(selector, ScoresCandidates) and selector.needs_optimizer_state:
        if not config.checkpoints:
            raise ConfigError(
                f"{name} (gradient_type 'adam') needs the optimizer state of a training run, but no "
                "checkpoints "
                "are given: list HF Trainer checkpoint folders (with optimizer.pt) under checkpoints, "
                "or set gradient_type: sgd in the component's params."
            )
        for ckpt in config.checkpoints:
            if not (Path(ckpt) / "optimizer.pt").is_file():
                raise ConfigError(
                    f"checkpoints: {ckpt!r} has no optimizer.pt, so there is no Adam state for "
                    "gradient_type 'adam'; save checkpoints with save_only_model: false, or use "
                    "gradient_type: sgd."
                )


def load_data(
    config: OfflineSelectConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[OfflineDataset, OfflineDataset | None]:
    """The pool and the validation set, tokenised as in training."""
    template = get_template(config.template, tokenizer)
    kwargs: dict[str, Any] = {
        "tokenizer": tokenizer,
        "template": template,
        "cutoff_len": config.cutoff_len,
        "strict": config.strict,
        "max_samples": config.max_samples,
    }
    if config.eval_dataset:
        resolve_datasets(config.eval_dataset, config.dataset_dir)  # a bad name fails before reading the pool
    pool = load_offline_dataset(config.dataset, config.dataset_dir, **kwargs)
    val = (
        load_offline_dataset(config.eval_dataset, config.dataset_dir, **kwargs)
        if config.eval_dataset
        else None
    )
    return pool, val


def _context(
    config: OfflineSelectConfig,
    model: torch.nn.Module,
    pool: OfflineDataset,
    val: OfflineDataset | None,
    *,
    round_: int,
    step: int,
    lr: float,
    device: torch.device,
    pad_id: int,
    adam_state: AdamState | None = None,
) -> SelectionContext:
    return SelectionContext(
        model=model,
        optimizer=None,
        train_dataset=pool.examples,
        eval_dataset=val.examples if val is not None else None,
        collator=SFTDataCollator(pad_id),
        learning_rate=lr,
        step=step,
        round=round_,
        dist=DistributedView.current(),
        seed=config.seed,
        device=device,
        adam_state=adam_state,
    )


def _score_over_checkpoints(
    config: OfflineSelectConfig,
    selector: ScoresCandidates,
    pool: OfflineDataset,
    val: OfflineDataset | None,
    device: torch.device,
    pad_id: int,
) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    """``(N, S)`` per-subtask scores summed over checkpoints with normalised lr weights."""
    weights = config.checkpoint_weights()
    if len(config.checkpoints) > 1 and config.checkpoint_learning_rates is None:
        logger.warning(
            "checkpoint_learning_rates is not set: the %d checkpoints get equal weights.", len(weights)
        )
    ckpts: list[str | None] = list(config.checkpoints) or [None]
    total: torch.Tensor | None = None
    names: list[str] = []
    timing = {"features_s": 0.0, "scoring_s": 0.0}
    candidates = np.arange(len(pool), dtype=np.int64)
    for i, (ckpt, weight) in enumerate(zip(ckpts, weights)):
        model = load_model(config, ckpt).to(device)
        step = _step_of(ckpt) if ckpt else 0
        adam = (
            AdamState.from_checkpoint(model, ckpt)
            if ckpt is not None and selector.needs_optimizer_state
            else None
        )
        ctx = _context(
            config, model, pool, val, round_=i + 1, step=step, lr=weight, device=device, pad_id=pad_id,
            adam_state=adam,
        )  # fmt: skip
        result: CandidateScores = selector.score_candidates(ctx, candidates)
        logger.info("checkpoint %s (weight %.4f): scored %d examples", ckpt, weight, len(pool))
        total = weight * result.per_subtask.double() + (total if total is not None else 0)
        names = result.subtasks
        timing["features_s"] += float(result.metadata.get("time_features_s", 0.0))
        timing["scoring_s"] += float(result.metadata.get("time_scoring_s", 0.0))
        del model
    assert total is not None
    return total, names, {"checkpoint_weights": weights, **timing}


def run_offline_select(config: OfflineSelectConfig) -> OfflineResult:
    """Run offline selection end to end and write its outputs to ``config.output_dir``.

    Outputs: ``scores.jsonl`` (index, dataset, score, subtask_scores for the whole
    pool with a ``ScoresCandidates`` selector such as ``less``; the chosen rows
    otherwise), the chosen subset in its source's format with a ``dataset_info.json``
    entry, and ``selection.json``.
    ``output_dir`` must be absent, empty or an earlier ``select`` output (dataflex
    never overwrites a ``dataset_info.json`` it did not write), and is locked while
    the selection runs.
    """
    t0 = time.perf_counter()
    components = load_components(config.components_cfg_file)
    selector = components.build_selector(config.component_name)
    check_before_work(config, selector)
    check_replaceable(config.output_dir, "output_dir", "select")
    if not DistributedView.current().is_main:
        return _run_offline_select(config, selector, t0)
    with OutputLock(config.output_dir):
        return _run_offline_select(config, selector, t0)


def _run_offline_select(config: OfflineSelectConfig, selector: Selector, t0: float) -> OfflineResult:
    tokenizer = train_model.load_tokenizer(config.model_name_or_path, config.trust_remote_code)
    pad_id = int(tokenizer.pad_token_id)
    pool, val = load_data(config, tokenizer)
    for source in pool.sources:
        subset_file_name(source)  # a name that would leave output_dir is refused before any work
    n = config.num_to_select(len(pool))
    if n > len(pool):
        raise ConfigError(
            f"select_count is {n} but the pool has {len(pool)} examples; offline selection picks "
            "distinct examples. Lower select_count or use select_fraction."
        )
    eval_examples = val.examples if val is not None else None
    selector.preflight(PreflightPlan(len(pool), eval_examples, n, device=config.device))  # before any model
    device = _device(config.device)
    out = Path(config.output_dir)
    report: dict[str, Any] = {"selector": config.component_name, "pool": len(pool), "selected": n}
    if isinstance(selector, ScoresCandidates):
        per_subtask, names, extra = _score_over_checkpoints(config, selector, pool, val, device, pad_id)
        scores = CandidateScores(per_subtask, names).scores
        indices = top_n(scores, n).tolist()
        rows = [
            {
                "index": i,
                "dataset": pool.examples[i].get("dataset"),
                "score": float(scores[i]),
                "subtask_scores": {s: float(v) for s, v in zip(names, per_subtask[i].tolist())},
            }
            for i in range(len(pool))
        ]
        report.update(extra, subtasks=names, checkpoints=list(config.checkpoints))
    else:
        last = config.checkpoints[-1] if config.checkpoints else None
        model = load_model(config, last).to(device)
        step = _step_of(last) if last else 0
        ctx = _context(config, model, pool, val, round_=1, step=step, lr=1.0, device=device, pad_id=pad_id)
        sel = selector.select(ctx, n)
        indices = sel.indices
        scores = None
        rows = [
            {"index": i, "dataset": pool.examples[i].get("dataset"), "score": s}
            for i, s in zip(sel.indices, _scores_or_none(sel))
        ]
        report["selector_metadata"] = sel.metadata
    report["scores"] = summarize(scores) if scores is not None else None
    report["composition"] = composition(pool.examples, indices)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if DistributedView.current().is_main:
        write_marker(out, "select")  # first, so a failed write's leftovers are ours to replace
        write_jsonl(out / "scores.jsonl", rows)
        report["dataset_info"] = write_subset(pool, indices, out)
        report["indices"] = indices
        atomic_write_text(out / "selection.json", json.dumps(report, indent=2, default=str))
    return OfflineResult(indices=indices, scores=scores, output_dir=out, report=report)


def _scores_or_none(sel: Selection) -> list[float | None]:
    """The selection's score of each index, or None for each when it has no scores."""
    return list(sel.scores) if sel.scores else [None] * len(sel.indices)

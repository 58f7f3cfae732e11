"""Which checkpoint ``dataflex-cli train`` resumes, checked before the model loads.

A resume must continue the run that wrote the checkpoint: the same pool in the same
order (its rows are addressed by index), the same optimisation settings and, for dynamic
selection, the same schedule, batch, seed and selector. A dynamic run's checkpoint records
these in its selection state; a static run's in ``dataflex_run.json``, written into every
checkpoint by :class:`RunRecordCallback`. :func:`check_resume` compares them with this run
and checks every file of the checkpoint before any model is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from dataflex.data.sft_dataset import as_examples
from dataflex.errors import ConfigError
from dataflex.io import IntegrityError, read_verified, write_verified
from dataflex.train.dynamic import layout
from dataflex.train.dynamic.resume import (
    RUN_RECORD,
    check_checkpoint_files,
    check_resumable,
    check_same_run,
    last_complete_checkpoint,
    run_fingerprint,
    run_settings,
)
from dataflex.train.dynamic.state import load_selection_state

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from transformers import TrainerControl, TrainerState, TrainingArguments

    from dataflex.data.sft_dataset import SFTDataset
    from dataflex.train.config import TrainConfig
    from dataflex.train.data import PreparedData
    from dataflex.train.dynamic.sampler import DynamicPlan

logger = logging.getLogger(__name__)


def as_train(dataset: SFTDataset) -> Sequence[Mapping[str, Any]]:
    """The pool as the digest reads it (rows by index and a length)."""
    examples = as_examples(dataset)
    assert examples is not None  # a pool is never None
    return examples


def static_fingerprint(data: PreparedData, args: TrainingArguments) -> dict[str, Any]:
    """What a static run's checkpoints depend on: the pool in order and the optimisation settings.

    The eval set only changes what is evaluated, not what is trained, so it is not recorded.
    """
    return run_fingerprint(None, as_train(data.train), None, args)


class RunRecordCallback(TrainerCallback):
    """Writes a static run's fingerprint into every checkpoint folder (``dataflex_run.json``, verified).

    Args:
        data: The run's datasets.
        args: Its training arguments. The fingerprint is computed at the first save, once.
    """

    def __init__(self, data: PreparedData, args: TrainingArguments) -> None:
        self.data, self.args = data, args
        self.fingerprint: dict[str, Any] | None = None

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if args.should_save:
            if self.fingerprint is None:
                self.fingerprint = static_fingerprint(self.data, self.args)
            folder = Path(layout.output_dir(args)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_verified(folder / RUN_RECORD, json.dumps(self.fingerprint, indent=1))


def resolve_checkpoint(cfg: TrainConfig) -> str | None:
    """The checkpoint this run resumes, its files checked: ``None``, the one named, or the newest complete.

    Needs only the config, so a damaged checkpoint is named before any data is read.

    Raises:
        ConfigError: a missing or damaged file of the named checkpoint, or ``true`` and no
            checkpoint of ``output_dir`` is complete.
    """
    resume = cfg.resume_from_checkpoint
    if not resume:
        return None
    if resume is True:
        dynamic = cfg.train_type == "dynamic_select"
        return last_complete_checkpoint(cfg.output_dir, selection_state=dynamic)
    check_checkpoint_files(resume)
    return str(resume)


def check_resume(
    checkpoint: str | None, data: PreparedData, args: TrainingArguments, plan: DynamicPlan | None
) -> None:
    """Refuse ``checkpoint`` (from :func:`resolve_checkpoint`) unless it continues this very run.

    What it recorded (pool and eval digests, selector params, optimisation settings; for
    dynamic selection also the schedule, batch, seed and selector) must be this run's. A
    static checkpoint without ``dataflex_run.json`` (written by another tool or an older
    dataflex) is resumed with a warning that this could not be checked.

    Raises:
        ConfigError: naming the differing key, or a damaged record.
    """
    if checkpoint is None:
        return
    if plan is not None:
        state = load_selection_state(checkpoint)
        settings = (plan.schedule, plan.examples_per_step, plan.pool_size, args.seed, plan.selector)
        expected = run_settings(*settings)
        fingerprint = run_fingerprint(plan.selector, as_train(data.train), as_examples(data.eval), args)
        check_resumable(state, expected, fingerprint, checkpoint)
        return
    record = Path(checkpoint) / RUN_RECORD
    if not record.is_file():
        logger.warning(
            "dataflex: %s has no %s (written by another tool or an older dataflex): cannot check that it "
            "was trained on this pool, in this order, with these settings.",
            checkpoint,
            RUN_RECORD,
        )
        return
    try:
        saved = json.loads(read_verified(record).decode("utf-8"))
    except (IntegrityError, ValueError) as exc:
        raise ConfigError(
            f"cannot resume from {checkpoint!r}: {exc} Resume from an earlier checkpoint, or delete this one."
        ) from None
    check_same_run(saved, static_fingerprint(data, args), checkpoint)

"""Dynamic selection inside the Hugging Face ``Trainer`` (and TRL's ``SFTTrainer``).

:class:`DynamicSelectionMixin` uses only the Trainer's extension points:

* ``_get_train_sampler`` returns a :class:`DynamicSelectionSampler`, whose length is one
  chunk of ``gcd(warmup_step, update_step)`` optimizer steps, so every Trainer "epoch"
  is one chunk and the dataloader is iterated afresh at every chunk boundary;
* a callback makes round *r*'s selection in ``on_step_end`` of step
  ``warmup_step + (r-1)·update_step`` (``on_train_begin`` for step 0), before the next
  chunk's iteration asks the sampler for indices; worker processes and accelerate's
  look-ahead only ever prefetch within a chunk, so no batch is a step early or late;
* ``on_optimizer_step`` records the learning rate of every step (the η̄ of LESS);
* ``on_save`` writes the selection state into each checkpoint folder, and ``train``
  restores it when ``resume_from_checkpoint`` is given.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from dataflex import stop_points
from dataflex.distributed import DistributedView
from dataflex.engines import engine_of
from dataflex.engines.cpu_deepspeed import name_cpu_for_deepspeed
from dataflex.errors import ConfigError, DataflexError, NonFiniteError
from dataflex.io import OutputLock
from dataflex.selectors.base import Selection, SelectionContext, Selector
from dataflex.train.dynamic import layout
from dataflex.train.dynamic.divergence import check_finite_weights, diverged_while_scoring
from dataflex.train.dynamic.plan import log_plan
from dataflex.train.dynamic.reports import (
    SELECTION_KEYS,
    SelectionReport,
    plot_run,
    round_record,
    selection_fields,
    target_labels,
    write_targets,
)
from dataflex.train.dynamic.resume import (
    check_checkpoint_files,
    check_resumable,
    last_complete_checkpoint,
    run_fingerprint,
    run_settings,
)
from dataflex.train.dynamic.sampler import DynamicPlan, DynamicSelectionSampler, check_dynamic_plan
from dataflex.train.dynamic.schedule import SelectionSchedule, check_max_steps
from dataflex.train.dynamic.state import load_selection_state, save_selection_state

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


def phase_summary(metadata: dict | None) -> str:
    """``"; features 1.20s, scoring 0.10s, I/O 0.30s"`` from a selector's timing metadata, or ``""``."""
    meta = metadata or {}
    labels = (("time_features_s", "features"), ("time_scoring_s", "scoring"), ("time_io_s", "I/O"))
    parts = [f"{label} {float(meta[key]):.2f}s" for key, label in labels if key in meta]
    return "; " + ", ".join(parts) if parts else ""


def _value(option: object) -> str:
    return str(getattr(option, "value", option))


def check_training_args(args: TrainingArguments, schedule: SelectionSchedule) -> None:
    """Reject ``TrainingArguments`` that contradict the selection schedule.

    Raises:
        ConfigError: for ``max_steps`` other than the schedule's total, epoch-based
            logging/saving/evaluation (a Trainer epoch is a chunk of steps here), length
            grouping, or ``auto_find_batch_size`` (the per-round budget depends on the batch).
    """
    check_max_steps(args.max_steps, schedule, yaml_key=False)
    for field in ("save_strategy", "eval_strategy", "logging_strategy"):
        if _value(getattr(args, field, "no")) == "epoch":
            raise ConfigError(
                f"{field}='epoch' is not supported with dynamic selection: the Trainer's epoch "
                f"counter counts chunks of {schedule.chunk_steps} steps here. Use {field}='steps' with "
                f"{field.split('_')[0]}_steps."
            )
    if _value(getattr(args, "train_sampling_strategy", "random")) in ("group_by_length", "batch_rebalance"):
        raise ConfigError(
            f"train_sampling_strategy={_value(args.train_sampling_strategy)!r} would reorder the selection; "
            "dynamic selection trains on each round's selection in the selector's order. Remove it."
        )
    accelerator_config = getattr(args, "accelerator_config", None)
    for option in ("split_batches", "dispatch_batches"):
        if getattr(accelerator_config, option, False):
            raise ConfigError(
                f"accelerator_config.{option}=True changes how batches reach the ranks; dynamic selection "
                "deals each step's global batch to the ranks itself. Leave it unset."
            )
    if getattr(args, "ignore_data_skip", False):
        raise ConfigError(
            "ignore_data_skip=True would replay the start of a chunk when resuming and shift every later "
            "round boundary; dynamic selection resumes exactly. Remove ignore_data_skip."
        )
    if getattr(args, "packing", False):
        raise ConfigError(
            "packing=True (TRL) merges examples into packed sequences, so a selection could not choose "
            "single examples. Set packing=False with dynamic selection."
        )
    if getattr(args, "auto_find_batch_size", False):
        raise ConfigError(
            "auto_find_batch_size is not supported with dynamic selection: the per-round budget is "
            "per-device batch x gradient accumulation x world size x update_step. Set the batch size."
        )


def global_batch_size(args: TrainingArguments) -> int:
    """Examples per optimizer step over all data-parallel ranks, from ``TrainingArguments`` alone.

    ``train_batch_size × gradient_accumulation_steps × world_size ÷ (tp × cp × sp)``, the
    Trainer's ``get_total_train_batch_size`` with the parallel sizes of
    ``args.parallelism_config``, so the plan can be checked before the model exists.
    """
    parallel = 1
    config = getattr(args, "parallelism_config", None)
    if config is not None:
        for size in ("tp_size", "cp_size", "sp_size"):
            parallel *= int(getattr(config, size, None) or 1)
    return args.train_batch_size * args.gradient_accumulation_steps * (args.world_size // parallel)


def check_plan(
    schedule: SelectionSchedule,
    selector: Selector,
    pool_size: int,
    args: TrainingArguments,
    *,
    has_eval_dataset: bool,
) -> DynamicPlan:
    """Check a plan against the pool and the training arguments once, before the model loads.

    Runs :func:`check_training_args` and :func:`~dataflex.train.dynamic.sampler.check_dynamic_plan`
    with the global batch of :func:`global_batch_size`; pass the result to
    :class:`DynamicSelectTrainer` as ``plan=`` so it does not check again. The plan's
    figures are logged once here (:func:`~dataflex.train.dynamic.plan.log_plan`).

    Raises:
        ConfigError: naming the value to change.
    """
    check_training_args(args, schedule)
    examples_per_step = global_batch_size(args)
    check_dynamic_plan(schedule, selector, pool_size, examples_per_step, has_eval_dataset=has_eval_dataset)
    plan = DynamicPlan(schedule, selector, int(pool_size), examples_per_step, has_eval_dataset)
    log_plan(plan)
    return plan


class TrainerLike(Protocol):
    """The members of ``transformers.Trainer`` the mixin uses; it is always mixed into one."""

    args: TrainingArguments
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    train_dataset: Sequence[Mapping[str, Any]]  # the pool: map-style, one tokenised row per index
    eval_dataset: Sequence[Mapping[str, Any]] | None
    data_collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]
    accelerator: Accelerator
    state: TrainerState

    def is_world_process_zero(self) -> bool: ...

    def add_callback(self, callback: TrainerCallback) -> None: ...

    def get_total_train_batch_size(self, args: TrainingArguments) -> int: ...

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: object, **kwargs: object
    ) -> TrainOutput: ...


class DynamicSelectionMixin:
    """Adds dynamic data selection to a ``transformers.Trainer`` subclass.

    Put it first in the bases: ``class MyTrainer(DynamicSelectionMixin, SFTTrainer)``.
    All other arguments go to the Trainer unchanged; ``max_steps`` becomes the
    schedule's total.

    Args:
        selector: Any :class:`~dataflex.selectors.base.Selector` (e.g. from
            :func:`dataflex.registry.build_selector`); it makes rounds 1..update_times.
        schedule: The :class:`SelectionSchedule`.
        plan: Instead of ``selector`` and ``schedule``: a plan :func:`check_plan` checked
            already (``dataflex-cli train`` passes one), so the Trainer does not check it
            again. Without one, the Trainer checks the plan itself.
        selection_eval_dataset: Target examples the selector scores against
            (default: the Trainer's ``eval_dataset``).
        selection_collator: Collator the selector batches examples with (default: the
            Trainer's ``data_collator``).
        selection_cache_dir: ``SelectionContext.cache_dir`` (default
            ``<output_dir>/dataflex/cache``).
        report_dir: Where ``selections.jsonl`` and the plots go (default ``<output_dir>/dataflex``).
        plots: Draw the report's plots at the end of training (needs matplotlib).
    """

    def __init__(
        self,
        *args: object,
        selector: Selector | None = None,
        schedule: SelectionSchedule | None = None,
        plan: DynamicPlan | None = None,
        selection_eval_dataset: Sequence[Mapping[str, Any]] | None = None,
        selection_collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]] | None = None,
        selection_cache_dir: str | os.PathLike | None = None,
        report_dir: str | os.PathLike | None = None,
        plots: bool = True,
        **kwargs: object,
    ) -> None:
        if plan is not None:
            if selector is not None or schedule is not None:
                raise ConfigError("pass either plan= or selector= and schedule=, not both.")
            if not isinstance(plan, DynamicPlan):
                raise ConfigError(f"plan must be a DynamicPlan (check_plan), got {type(plan).__name__}.")
            selector, schedule = plan.selector, plan.schedule
        if not isinstance(selector, Selector):
            raise ConfigError(
                f"selector must be a dataflex Selector instance, got {type(selector).__name__}."
            )
        if not isinstance(schedule, SelectionSchedule):
            raise ConfigError(f"schedule must be a SelectionSchedule, got {type(schedule).__name__}.")
        name_cpu_for_deepspeed()  # before the Trainer imports DeepSpeed, which warns on a CPU otherwise
        super().__init__(*args, **kwargs)
        trainer = self._trainer
        processes = DistributedView.current().world_size
        if processes != trainer.args.world_size:
            raise ConfigError(
                f"torch.distributed runs {processes} processes but the Trainer sees world_size="
                f"{trainer.args.world_size}: each process would train alone on the whole schedule. "
                "On a machine without CUDA, pass use_cpu=True to TrainingArguments under torchrun."
            )
        train_dataset = trainer.train_dataset
        if train_dataset is None or not hasattr(train_dataset, "__len__"):
            raise ConfigError(
                "dynamic selection needs a map-style train_dataset with a length (the candidate pool)."
            )
        self.selection_eval_dataset = (
            selection_eval_dataset if selection_eval_dataset is not None else trainer.eval_dataset
        )
        self.selection_collator = selection_collator
        self.selection_schedule = schedule
        # The Trainer's own count (it knows the model's tensor-parallel size).
        examples_per_step = trainer.get_total_train_batch_size(trainer.args)
        has_eval_dataset = self.selection_eval_dataset is not None
        if plan is None:  # built here, checked here: the one check of this path
            check_training_args(trainer.args, schedule)
            self.dynamic_sampler = DynamicSelectionSampler(
                selector,
                schedule,
                len(train_dataset),
                examples_per_step,
                seed=trainer.args.seed,
                has_eval_dataset=has_eval_dataset,
            )
            log_plan(DynamicPlan(schedule, selector, len(train_dataset), examples_per_step, has_eval_dataset))
        else:  # checked before the model loaded: only confirm it was checked for this run
            ours = (len(train_dataset), examples_per_step, has_eval_dataset)
            checked = (plan.pool_size, plan.examples_per_step, plan.has_eval_dataset)
            if ours != checked:
                raise ConfigError(
                    "the plan was checked for (pool, global batch, target set) = "
                    f"{checked}, but this Trainer trains with {ours}; check the plan with the "
                    "Trainer's own train_dataset and TrainingArguments (check_plan)."
                )
            self.dynamic_sampler = DynamicSelectionSampler.from_plan(plan, seed=trainer.args.seed)
        if trainer.args.max_steps != schedule.total_steps:
            logger.info("dataflex: max_steps set to the schedule's total, %d.", schedule.total_steps)
            trainer.args.max_steps = schedule.total_steps
        out = Path(layout.output_dir(trainer.args))
        self.selection_report = SelectionReport(
            report_dir if report_dir is not None else layout.report_dir(out)
        )
        self.selection_cache_dir = (
            Path(selection_cache_dir) if selection_cache_dir else layout.selection_cache_dir(out)
        )
        self.selection_plots = plots
        self._lrs_since_round: list[float] = []
        self._round_records: dict[int, dict[str, Any]] = {}
        trainer.add_callback(_DynamicSelectionCallback(self))

    @property
    def _trainer(self) -> TrainerLike:
        return cast("TrainerLike", self)

    @property
    def selector(self) -> Selector:
        """The selector making rounds ≥ 1."""
        return self.dynamic_sampler.selector

    @property
    def selections(self) -> dict[int, Selection]:
        """Round → selection, for the rounds made so far (0 is the warm-up)."""
        return self.dynamic_sampler.selections

    # -- Trainer extension points ------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> DynamicSelectionSampler:
        # Sized: the trainer's train_dataset was checked to have a length when it was built.
        dataset = cast(Sized, train_dataset if train_dataset is not None else self._trainer.train_dataset)
        if len(dataset) != self.dynamic_sampler.pool_size:
            raise DataflexError(
                f"the training dataset has {len(dataset)} examples but the selection pool has "
                f"{self.dynamic_sampler.pool_size}; do not replace train_dataset after building the trainer."
            )
        return self.dynamic_sampler

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: object, **kwargs: object
    ) -> TrainOutput:
        """``Trainer.train``, restoring the selection state when resuming.

        The main process holds the output-folder lock (:class:`dataflex.io.OutputLock`) for
        the whole run, so two runs never interleave their files (``dataflex-cli train``
        holds it already; it is shared).
        """
        if not self._trainer.is_world_process_zero():
            return self._train_with_selection(resume_from_checkpoint, *args, **kwargs)
        with OutputLock(layout.output_dir(self._trainer.args), reentrant=True):
            return self._train_with_selection(resume_from_checkpoint, *args, **kwargs)

    def _train_with_selection(
        self, resume_from_checkpoint: str | bool | None, *args: object, **kwargs: object
    ) -> TrainOutput:
        output_dir = layout.output_dir(self._trainer.args)
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            if get_last_checkpoint(output_dir) is None:
                raise ConfigError(
                    f"resume_from_checkpoint: true, but output_dir {output_dir!r} has no checkpoint-* folder."
                )
            checkpoint = last_complete_checkpoint(output_dir)
            resume_from_checkpoint = checkpoint  # the Trainer would take the newest, complete or not
        elif checkpoint is False:
            checkpoint = None
        if checkpoint:
            check_checkpoint_files(checkpoint)
            self._restore_selection_state(checkpoint)
        else:
            self.dynamic_sampler.selections = {}
            self._lrs_since_round = []
            self._round_records = {}
            if self._trainer.is_world_process_zero():
                self.selection_report.reset()
        return cast("TrainerLike", super()).train(resume_from_checkpoint, *args, **kwargs)

    # -- selection rounds -------------------------------------------------------------

    def selection_context(self, round_: int, step: int) -> SelectionContext:
        """The :class:`SelectionContext` of ``round_``, made after ``step`` optimizer steps."""
        trainer = self._trainer
        optimizer = trainer.optimizer
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        current_lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else 0.0
        lrs = self._lrs_since_round
        return SelectionContext(
            model=trainer.accelerator.unwrap_model(trainer.model),
            optimizer=optimizer,
            train_dataset=trainer.train_dataset,
            eval_dataset=self.selection_eval_dataset,
            collator=self.selection_collator
            if self.selection_collator is not None
            else trainer.data_collator,
            learning_rate=statistics.fmean(lrs) if lrs else current_lr,
            step=step,
            round=round_,
            dist=DistributedView.current(),
            cache_dir=self.selection_cache_dir,
            seed=trainer.args.seed,
            device=trainer.args.device,
            total_rounds=self.selection_schedule.update_times,
        )

    def _select_if_due(self, step: int) -> None:
        round_ = self.dynamic_sampler.pending_round(step)
        if round_ is None:
            return
        if step != self.selection_schedule.start_step(round_):
            raise DataflexError(
                f"round {round_} should have been selected at step "
                f"{self.selection_schedule.start_step(round_)}, but it is missing at step {step}."
            )
        ctx = self.selection_context(round_, step) if round_ >= 1 else None
        start = time.perf_counter()
        if ctx is None:
            selection = self.dynamic_sampler.select_round(round_, None)
        else:
            selection = self._run_selector(round_, ctx)
        stop_points.reached("round-selected")
        seconds = time.perf_counter() - start
        lr = None if ctx is None else ctx.learning_rate
        self._lrs_since_round = []
        candidates = self.dynamic_sampler.pool_size
        logger.info(
            "dataflex: round %d at step %d: chose %d of %d candidates in %.2fs%s%s",
            round_,
            step,
            len(selection.indices),
            candidates,
            seconds,
            "" if lr is None else f" (mean lr {lr:.3g})",
            phase_summary(selection.metadata),
        )
        record = round_record(
            round_=round_,
            step=step,
            learning_rate=lr,
            selection=selection,
            seconds=seconds,
            candidates=candidates,
            train_dataset=self._trainer.train_dataset,
        )
        # which engine held the parameters (plain, zero1/2, zero3, fsdp2): a sharded run says so
        record["engine"] = engine_of(self._trainer.accelerator.unwrap_model(self._trainer.model)).value
        self._round_records[round_] = record
        if self._trainer.is_world_process_zero():
            self.selection_report.append(record)

    def _run_selector(self, round_: int, ctx: SelectionContext) -> Selection:
        model = ctx.model
        assert model is not None  # selection_context passes the trainer's model
        was_training = model.training
        lr = float(self._trainer.args.learning_rate)
        check_finite_weights(model, round_, ctx.step, lr)
        try:
            selection = self.dynamic_sampler.select_round(round_, ctx)
        except NonFiniteError as exc:
            raise diverged_while_scoring(exc, round_, ctx.step, lr) from None
        finally:
            model.train(was_training)
        left = [n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.any())]
        if left:
            raise DataflexError(
                f"selector {getattr(self.selector, 'registry_name', type(self.selector).__name__)!r} left "
                f"gradients in .grad of {left[:3]}...; selectors must not touch training state."
            )
        return selection

    def _record_lr(self) -> None:
        optimizer = getattr(self._trainer.optimizer, "optimizer", self._trainer.optimizer)
        assert optimizer is not None  # called from on_optimizer_step
        self._lrs_since_round.append(float(optimizer.param_groups[0]["lr"]))

    # -- checkpoint state -------------------------------------------------------------

    def selection_state(self, step: int) -> dict[str, Any]:
        """Everything a resumed run needs to continue with the same selections."""
        sampler = self.dynamic_sampler
        return {
            "global_step": step,
            **run_settings(
                self.selection_schedule,
                sampler.examples_per_step,
                sampler.pool_size,
                sampler.seed,
                self.selector,
            ),
            "lrs_since_last_round": list(self._lrs_since_round),
            "sampler": sampler.state_dict(),
            # the selections themselves are in "sampler" once; each record keeps the rest
            "report": [
                {k: v for k, v in self._round_records[r].items() if k not in SELECTION_KEYS}
                for r in sorted(self._round_records)
            ],
            **self._run_fingerprint(),
        }

    def _run_fingerprint(self) -> dict[str, Any]:
        """Pool, eval set, selector params and optimisation settings (see :mod:`.resume`); computed once."""
        if getattr(self, "_fingerprint_cache", None) is None:
            trainer = self._trainer
            self._fingerprint_cache = run_fingerprint(
                self.selector, trainer.train_dataset, self.selection_eval_dataset, trainer.args
            )
        return self._fingerprint_cache

    def _save_selection_state(self, folder: str | os.PathLike, step: int) -> None:
        save_selection_state(folder, self.selection_state(step))

    def _restore_selection_state(self, checkpoint: str | os.PathLike) -> None:
        state = load_selection_state(checkpoint)
        sampler = self.dynamic_sampler
        expected = run_settings(
            self.selection_schedule, sampler.examples_per_step, sampler.pool_size, sampler.seed, self.selector
        )
        check_resumable(state, expected, self._run_fingerprint(), checkpoint)
        sampler.load_state_dict(state["sampler"])
        self._lrs_since_round = [float(x) for x in state["lrs_since_last_round"]]
        self._round_records = {
            int(r["round"]): {**r, **selection_fields(sampler.selections[int(r["round"])])}
            for r in state["report"]
        }
        if self._trainer.is_world_process_zero():
            self.selection_report.reset()
            for round_ in sorted(self._round_records):
                self.selection_report.append(self._round_records[round_])
        logger.info(
            "dataflex: resumed selection state at step %d (rounds %s) from %s.",
            state["global_step"],
            sorted(sampler.selections),
            checkpoint,
        )

    def _write_report(self) -> None:
        trainer = self._trainer
        if not trainer.is_world_process_zero():
            return
        self.selection_report.write_log_history(trainer.state.log_history)
        targets = target_labels(self.selection_eval_dataset)
        write_targets(self.selection_report.report_dir, targets)
        if not self.selection_plots:
            return
        try:
            plot_run(self.selection_report.report_dir, trainer.state.log_history, targets)
        except ImportError as exc:
            logger.warning("dataflex: %s The selection report has no plots.", exc)
            return
        logger.info("dataflex: selection report and plots in %s", self.selection_report.report_dir)


class _DynamicSelectionCallback(TrainerCallback):
    """Calls the mixin at the Trainer's events; holds no state of its own."""

    def __init__(self, trainer: DynamicSelectionMixin) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.trainer._select_if_due(state.global_step)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.trainer.dynamic_sampler.set_step(state.global_step)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.trainer._record_lr()
        stop_points.reached("optimizer-step")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.trainer._select_if_due(state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if args.should_save:
            folder = Path(layout.output_dir(args)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            self.trainer._save_selection_state(folder, state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.trainer._write_report()


class DynamicSelectTrainer(DynamicSelectionMixin, Trainer):
    """``transformers.Trainer`` with dynamic data selection (see :class:`DynamicSelectionMixin`)."""

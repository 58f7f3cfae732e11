"""``dataflex-cli train``: from a validated config to a trained adapter (or model).

Everything that can be checked without the model is checked first (output dir,
model path, tokenizer, template, datasets, training arguments and, for dynamic
selection, the plan and the selector's own ``preflight``), so a bad input fails in
seconds and leaves nothing in ``output_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.data.collator import SFTDataCollator
from dataflex.data.sft_dataset import as_examples
from dataflex.engines import check_engine_config, fsdp_enabled, has_accelerator
from dataflex.engines.cpu_deepspeed import cpu_deepspeed_training_kwargs, name_cpu_for_deepspeed
from dataflex.engines.cpu_fsdp import configure_cpu_fsdp, cpu_fsdp_training_kwargs
from dataflex.errors import ConfigError
from dataflex.io import (
    LOCK_FILE,
    MARKER,
    OutputLock,
    atomic_write_json,
    check_no_overlap,
    check_writable_dir,
    is_marked,
    write_marker,
)
from dataflex.train.adapter_files import ADAPTER_CONFIG, check_adapter, load_errors_named
from dataflex.train.checkpoints import RunRecordCallback, check_resume, resolve_checkpoint
from dataflex.train.config import TrainConfig
from dataflex.train.data import PreparedData, prepare_datasets
from dataflex.train.dynamic.sampler import DynamicPlan
from dataflex.train.dynamic.schedule import SelectionSchedule
from dataflex.train.dynamic.trainer import DynamicSelectTrainer, check_plan, global_batch_size
from dataflex.train.early_warnings import warn_before_loading
from dataflex.train.model import apply_finetuning, check_model_path, load_model, load_tokenizer, torch_dtype
from dataflex.train.plots import plot_loss
from dataflex.train.precision import check_bf16
from dataflex.train.preflight import check_deepspeed_file, check_run_inputs, check_selection_inputs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

    from dataflex.data.sft_dataset import SFTDataset
    from dataflex.train.model import TrainableModel

logger = logging.getLogger(__name__)

DATA_REPORT = "data_report.json"


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        output_dir: Where the adapter/model, tokenizer, state and plots were saved.
        global_step: Optimizer steps taken.
        training_loss: Mean training loss over the run.
        metrics: Trainer metrics (train_runtime, ..., eval_loss when evaluated).
        log_history: The Trainer's log entries (loss per logging step, ...).
        data_report: Dataset composition, truncations and skips (also in data_report.json).
        plots: Paths of the loss plots written (``plot_loss: true``).
    """

    output_dir: Path
    global_step: int
    training_loss: float
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]]
    data_report: dict[str, Any]
    plots: list[Path] = field(default_factory=list)


def check_output_dir(cfg: TrainConfig) -> Path:
    """``output_dir`` must lie outside the inputs, be creatable and (unless overwriting or resuming) empty.

    With ``overwrite_output_dir: true`` (and no resume), an earlier run's ``checkpoint-*``
    folders would be resumed by a later ``resume_from_checkpoint: true``; they are cleared
    before training when dataflex wrote them, and refused otherwise.
    """
    inputs = {
        "model_name_or_path": cfg.model_name_or_path,
        "adapter_name_or_path": cfg.adapter_name_or_path,
        "dataset_dir": cfg.dataset_dir,
    }
    check_no_overlap(cfg.output_dir, "output_dir", inputs)  # first: the next check writes a probe file
    check_writable_dir(cfg.output_dir, "output_dir")
    out = Path(cfg.output_dir)
    entries = [p for p in out.iterdir() if p.name not in (LOCK_FILE, MARKER)] if out.is_dir() else []
    if entries and not (cfg.overwrite_output_dir or cfg.resume_from_checkpoint):
        raise ConfigError(
            f"output_dir: {cfg.output_dir!r} is not empty; set overwrite_output_dir: true to write into "
            "it, resume_from_checkpoint to continue a run, or choose another output_dir."
        )
    old = stale_checkpoints(cfg)
    if old and not is_marked(out, "train"):
        raise ConfigError(
            f"output_dir: {cfg.output_dir!r} holds checkpoint folders of an earlier run ({old[0].name}, ...) "
            "that dataflex did not write; with overwrite_output_dir: true a later resume_from_checkpoint: "
            "true would resume them. Delete them, or choose another output_dir."
        )
    return out


def stale_checkpoints(cfg: TrainConfig) -> list[Path]:
    """The ``checkpoint-*`` folders an overwriting (not resuming) run replaces."""
    out = Path(cfg.output_dir)
    if not (cfg.overwrite_output_dir and not cfg.resume_from_checkpoint and out.is_dir()):
        return []
    return sorted(p for p in out.glob("checkpoint-*") if p.is_dir())


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _has_accelerator() -> bool:
    return has_accelerator()


def build_training_args(cfg: TrainConfig) -> TrainingArguments:
    """The ``transformers.TrainingArguments`` of a config (``deepspeed`` passed untouched)."""
    from transformers import TrainingArguments

    check_deepspeed_file(cfg)  # "pip install 'dataflex[deepspeed]'", not a metadata error
    max_steps = cfg.max_steps
    if cfg.dynamic_total_steps is not None:
        max_steps = cfg.dynamic_total_steps  # the selection schedule fixes the length of the run
    # transformers v5 renamed gradient_checkpointing to activation_checkpointing
    names = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    )
    extra: dict[str, Any] = {checkpointing: cfg.gradient_checkpointing}
    if not _has_accelerator():
        extra["dataloader_pin_memory"] = False  # nothing to pin to; saves a UserWarning per dataloader
    # Without an accelerator, transformers needs use_cpu=True both for bf16 autocast and for DDP
    # (gloo) under torchrun; without it every torchrun process would train alone on all the data.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu_fsdp = _uses_fsdp(cfg) and not _has_accelerator() and "LOCAL_RANK" in os.environ
    if cfg.deepspeed is not None and not _has_accelerator() and "LOCAL_RANK" in os.environ:
        extra.update(cpu_deepspeed_training_kwargs())  # use_cpu=True would switch DeepSpeed off
    elif cpu_fsdp:
        extra.update(cpu_fsdp_training_kwargs())  # accelerate alone would train with DDP here
    elif not _has_accelerator() and (cfg.bf16 or distributed):
        logger.info(
            "no accelerator found: training on the CPU%s", " with bfloat16 autocast" if cfg.bf16 else ""
        )
        extra["use_cpu"] = True
    extra.update(cfg.extra_training_args)  # the config's other TrainingArguments keys, unchanged
    check_bf16(cfg.bf16, bool(extra.get("use_cpu")))  # transformers' message would say "assign use_cpu"
    try:
        args = TrainingArguments(
            **extra,
            output_dir=cfg.output_dir,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            per_device_eval_batch_size=cfg.per_device_eval_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.num_train_epochs,
            max_steps=max_steps,
            lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            logging_steps=cfg.logging_steps,
            save_steps=cfg.save_steps,
            save_total_limit=cfg.save_total_limit,
            save_only_model=cfg.save_only_model,
            eval_strategy=cfg.eval_strategy,
            eval_steps=cfg.eval_steps,
            seed=cfg.seed,
            bf16=cfg.bf16,
            fp16=cfg.fp16,
            ddp_timeout=cfg.ddp_timeout,
            deepspeed=cfg.deepspeed,
            dataloader_num_workers=cfg.dataloader_num_workers,
            report_to=cfg.report_to,
            remove_unused_columns=False,  # the collator drops the metadata keys (dataset, subtask)
            label_names=["labels"],
        )
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"invalid training arguments: {exc}") from None
    if cpu_fsdp:
        configure_cpu_fsdp(args)
    return args


def _uses_fsdp(cfg: TrainConfig) -> bool:
    """Whether the config turns the Trainer's FSDP on (its ``fsdp`` key; checked by load_train_config)."""
    return fsdp_enabled(cfg.extra_training_args.get("fsdp"))


def plan_dynamic_selection(cfg: TrainConfig, pool_size: int, training_args: TrainingArguments) -> DynamicPlan:
    """Build and check the selection plan of a ``dynamic_select`` config, before the model loads.

    The selector comes from the components file :func:`load_train_config` already read
    (:meth:`TrainConfig.components`); the plan is checked here, once, and the Trainer
    takes it as checked.

    Raises:
        ConfigError: for a bad schedule, an unknown component or missing components file,
            a per-round budget larger than the pool, or training arguments that
            contradict the schedule.
    """
    # the config types update_step/update_times as optional; SelectionSchedule refuses a None by name
    schedule = SelectionSchedule(cfg.warmup_step, cfg.update_step, cfg.update_times)  # type: ignore[arg-type]
    try:
        selector = cfg.components().build_selector(cfg.component_name or "")
    except ConfigError as exc:
        raise ConfigError(f"component_name: {exc}") from None
    return check_plan(schedule, selector, pool_size, training_args, has_eval_dataset=bool(cfg.eval_dataset))


def build_trainer(
    cfg: TrainConfig,
    model: TrainableModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: SFTDataset,
    eval_dataset: SFTDataset | None,
    collator: SFTDataCollator,
    training_args: TrainingArguments,
    plan: DynamicPlan | None = None,
) -> Trainer:
    """The one place a trainer is created: plain ``transformers.Trainer`` or the dynamic one.

    A ``dynamic_select`` run passes the ``plan`` :func:`plan_dynamic_selection` built.
    """
    callbacks = []
    if cfg.early_stopping_steps is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=cfg.early_stopping_steps,
                early_stopping_threshold=cfg.early_stopping_min_delta,
            )
        )
    trainer_kwargs: dict[str, Any] = {
        "callbacks": callbacks,
        "model": model,
        "args": training_args,
        "data_collator": collator,
        "train_dataset": train_dataset,
        "eval_dataset": eval_dataset if cfg.eval_strategy != "no" else None,
        "processing_class": tokenizer,
    }
    if cfg.train_type == "dynamic_select":
        if plan is None:
            raise ValueError("a dynamic_select run needs its DynamicPlan (plan_dynamic_selection).")
        return DynamicSelectTrainer(
            **trainer_kwargs,
            plan=plan,
            # the selector scores against eval_dataset even when the Trainer does not evaluate
            selection_eval_dataset=as_examples(eval_dataset),
            plots=cfg.plot_loss,
        )
    from transformers import Trainer

    return Trainer(**trainer_kwargs)


def _check_engine(cfg: TrainConfig) -> None:
    """DeepSpeed installed, its config readable, and the engine fits the selector and method.

    FSDP needs one process per device: ``fsdp`` outside torchrun is refused here (the
    Trainer would refuse it only after the model loaded).
    """
    selector = cfg.selector_name() if cfg.train_type == "dynamic_select" else None
    fsdp = _uses_fsdp(cfg)
    if fsdp and "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            "fsdp: FSDP shards the model over several processes, but this run is a single process. Start it "
            "under torchrun: FORCE_TORCHRUN=1 NPROC_PER_NODE=2 dataflex-cli train <config> (or remove fsdp)."
        )
    check_engine_config(cfg.deepspeed, finetuning_type=cfg.finetuning_type, selector=selector, fsdp=fsdp)


def run_train(cfg: TrainConfig) -> TrainResult:
    """Train as the config says and save the result in ``output_dir``.

    Raises:
        ConfigError: any bad input, before the model is loaded and before anything is
            written to ``output_dir``.
    """
    from transformers import set_seed

    # every referenced file, dataset and model path (a checkpoint's files too), all problems in one
    # message, no network asked
    check_run_inputs(cfg, extra_checks=(check_output_dir,))
    checkpoint = resolve_checkpoint(cfg)  # checked whole above; which one, when resuming the newest
    out = Path(cfg.output_dir)
    name_cpu_for_deepspeed()  # else DeepSpeed (which accelerate imports) warns on every CPU run
    _check_engine(cfg)
    model_config = check_model_path(cfg.model_name_or_path, cfg.trust_remote_code)
    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code)
    data = prepare_datasets(cfg, tokenizer)
    training_args = build_training_args(cfg)
    warn_before_loading(
        cfg,
        model_config,
        has_accelerator=_has_accelerator(),
        examples_per_step=global_batch_size(training_args),
    )
    if data.eval is not None and cfg.eval_strategy == "no" and cfg.train_type == "static":
        logger.info("eval_dataset is checked but not evaluated (eval_strategy: no)")
    plan = None
    if cfg.train_type == "dynamic_select":
        # schedule, selector, per-round budget vs. pool: built and checked before the model loads
        plan = plan_dynamic_selection(cfg, len(data.train), training_args)
        check_selection_inputs(
            cfg,
            plan.selector,
            plan.schedule,
            data.train,
            as_examples(data.eval),
            global_batch_size(training_args),
        )
    check_resume(checkpoint, data, training_args, plan)  # the checkpoint is this run's
    if cfg.adapter_name_or_path and Path(cfg.adapter_name_or_path, ADAPTER_CONFIG).is_file():
        check_adapter(cfg.adapter_name_or_path)

    set_seed(cfg.seed)  # the new LoRA matrices are initialised from the seeded RNG
    model: TrainableModel = load_model(
        cfg.model_name_or_path, dtype=torch_dtype(cfg.bf16, cfg.fp16), trust_remote_code=cfg.trust_remote_code
    )
    model = apply_finetuning(
        model,
        cfg.finetuning_type,
        lora_target=cfg.lora_target,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha_value,
        lora_dropout=cfg.lora_dropout,
        adapter_name_or_path=cfg.adapter_name_or_path,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    # Nothing is written to output_dir before here, so a bad input leaves it untouched.
    lock = OutputLock(out) if _is_main_process() else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:
            write_marker(out, "train")
            for folder in stale_checkpoints(cfg):
                logger.info("overwrite_output_dir: removing the earlier run's %s", folder)
                shutil.rmtree(folder)
        return _train(cfg, out, model, tokenizer, data, training_args, plan, checkpoint)
    finally:
        if lock is not None:
            lock.release()


def _train(
    cfg: TrainConfig,
    out: Path,
    model: TrainableModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    training_args: TrainingArguments,
    plan: DynamicPlan | None,
    checkpoint: str | None = None,
) -> TrainResult:
    collator = SFTDataCollator(tokenizer.pad_token_id)
    trainer = build_trainer(cfg, model, tokenizer, data.train, data.eval, collator, training_args, plan)
    if plan is None:  # a dynamic run's selection state records the same and more
        trainer.add_callback(RunRecordCallback(data, training_args))
    loading = (
        load_errors_named(
            f"resume_from_checkpoint: {checkpoint!r}",
            "Resume from an earlier checkpoint of this run, or start a fresh run.",
        )
        if checkpoint
        else contextlib.nullcontext()
    )
    with loading:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()
    metrics = dict(output.metrics)
    if data.eval is not None and cfg.eval_strategy != "no":
        metrics.update(trainer.evaluate())
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("all", metrics)
    plots: list[Path] = []
    if trainer.is_world_process_zero():
        atomic_write_json(out / DATA_REPORT, data.report)
        if cfg.plot_loss:
            eval_name = (
                ", ".join(cfg.eval_dataset) if cfg.eval_dataset and cfg.eval_strategy != "no" else None
            )
            plots = plot_loss(trainer.state.log_history, out, eval_name=eval_name)
    return TrainResult(
        output_dir=out,
        global_step=trainer.state.global_step,
        training_loss=float(output.training_loss),
        metrics=metrics,
        log_history=list(trainer.state.log_history),
        data_report=data.report,
        plots=plots,
    )

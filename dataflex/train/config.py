"""The training and export YAML schemas (the seed guide's LLaMA-Factory-style keys).

Configs are flat mappings, as in LLaMA-Factory; the section comments of the seed's
YAML (``### model`` ...) are only for readers. Every key is validated: an unknown key
or a wrong type is a :class:`~dataflex.errors.ConfigError` naming the key and the
closest valid key, and accepted-but-unsupported values (``stage: pt``) are refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from dataflex.configs.components import SHIPPED_COMPONENTS, Components, load_components
from dataflex.configs.yaml_files import apply_overrides, comma_separated, read_yaml_mapping, validate_model
from dataflex.data.templates import check_template_name
from dataflex.errors import ConfigError, did_you_mean
from dataflex.registry import SELECTORS

logger = logging.getLogger(__name__)

SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
)  # fmt: skip
#: The largest learning rate a config may ask for. Adam-type optimizers train at 1e-6..1e-3 and
#: those that set their own step size (Prodigy, D-Adaptation) at 1.0; well above it every optimizer
#: diverges within a few steps.
MAX_LEARNING_RATE = 10.0
_STRICT = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)  # .inf/.nan refused by name

#: The seed YAML's ``### <section>`` headings, keyed by the first field of each section
#: (the fields of a section follow in declaration order); the configuration reference
#: groups the keys by them.
TRAIN_SECTIONS = {
    "model_name_or_path": "model",
    "stage": "method",
    "dataset": "dataset",
    "output_dir": "output",
    "per_device_train_batch_size": "train",
    "train_type": "dynamic_train",
}


class TrainConfig(BaseModel):
    """``dataflex-cli train`` config: model, method, dataset, output, train, dynamic_train keys."""

    model_config = _STRICT

    # model
    model_name_or_path: str = Field(description="Local folder or hub id of the base model.")
    adapter_name_or_path: str | None = Field(None, description="LoRA adapter to continue training from.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder/hub.")
    # method
    stage: str = Field(
        "sft", json_schema_extra={"allowed": ["sft"]}, description="Training stage; only `sft` is supported."
    )
    do_train: bool = Field(True, description="Must be true (`dataflex-cli train` always trains).")
    finetuning_type: str = Field(
        "lora",
        json_schema_extra={"allowed": ["lora", "full"]},
        description="`lora` (adapter) or `full` (all parameters).",
    )
    lora_target: list[str] = Field(
        default=["all"], description="`all` (every linear layer but the output head) or module names."
    )
    lora_rank: int = Field(8, gt=0, description="LoRA rank r.")
    lora_alpha: int | None = Field(None, gt=0, description="LoRA alpha; default 2 × lora_rank.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    deepspeed: str | dict[str, Any] | None = Field(
        None, description="DeepSpeed JSON path or dict, passed to TrainingArguments untouched."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    # dataset
    dataset: list[str] = Field(description="Train datasets: dataset_info.json names or .json/.jsonl paths.")
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json.")
    eval_dataset: list[str] | None = Field(
        None, description="Validation / target-task datasets (LESS's target set; evaluation data)."
    )
    template: str | None = Field(
        None,
        description="Chat template name, as in LLaMA-Factory (`default` = its `Human:/Assistant:` "
        "template); unset or `tokenizer` = the tokenizer's own chat template.",
    )
    cutoff_len: int = Field(2048, gt=0, description="Maximum tokens per example (longer are truncated).")
    max_samples: int | None = Field(None, gt=0, description="Use at most this many rows of each dataset.")
    overwrite_cache: bool = Field(
        False, description="Accepted for compatibility; dataflex keeps no tokenisation cache."
    )
    preprocessing_num_workers: int | None = Field(None, gt=0, description="Processes for tokenisation.")
    strict: bool = Field(False, description="Fail on a bad row instead of skipping and counting it.")
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    seed: int = Field(42, description="Random seed (model init of LoRA, shuffling, selection).")
    # output
    output_dir: str = Field(description="Where the adapter/model, checkpoints and plots go.")
    logging_steps: float = Field(10, gt=0, description="Log the loss every N optimizer steps.")
    save_steps: float = Field(500, gt=0, description="Save a checkpoint every N optimizer steps.")
    save_total_limit: int | None = Field(None, gt=0, description="Keep at most N checkpoints.")
    plot_loss: bool = Field(False, description="Write training_loss.png (and eval loss) into output_dir.")
    save_only_model: bool = Field(False, description="Checkpoints without optimizer/scheduler state.")
    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output_dir.")
    report_to: list[str] = Field(default=["none"], description="Loggers: none, tensorboard, wandb, ...")
    resume_from_checkpoint: str | bool | None = Field(
        None, description="Checkpoint folder to resume from (true: the latest in output_dir)."
    )
    # train
    per_device_train_batch_size: int = Field(8, gt=0, description="Examples per device per micro-batch.")
    per_device_eval_batch_size: int = Field(8, gt=0, description="Examples per device per eval batch.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(
        5e-5,
        gt=0,
        le=MAX_LEARNING_RATE,
        description="Peak learning rate.",
    )
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Total optimizer steps; -1 = use num_train_epochs.")
    lr_scheduler_type: str = Field(
        "linear", json_schema_extra={"allowed": list(SCHEDULERS)}, description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps of linear LR warmup.")
    warmup_steps: int = Field(0, ge=0, description="LR warmup steps (overrides warmup_ratio if > 0).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision.")
    fp16: bool = Field(False, description="Train in float16 mixed precision.")
    ddp_timeout: int = Field(1800, gt=0, description="Seconds before a distributed collective times out.")
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        "no", description="When to evaluate on eval_dataset: no, steps, epoch."
    )
    eval_steps: float | None = Field(
        None, gt=0, description="Evaluate every N steps (default logging_steps)."
    )
    # dynamic_train
    train_type: Literal["static", "dynamic_select"] = Field(
        "static", description="`static`: plain SFT; `dynamic_select`: select data during training."
    )
    components_cfg_file: str = Field(
        str(SHIPPED_COMPONENTS), description="components.yaml holding the selector specs."
    )
    component_name: str | None = Field(None, description="Key of the selector in components_cfg_file.")
    warmup_step: int = Field(0, ge=0, description="Steps on a random subset before the first selection.")
    update_step: int | None = Field(None, gt=0, description="Optimizer steps between two selections.")
    update_times: int | None = Field(None, gt=0, description="Number of selection rounds.")
    early_stopping_steps: int | None = Field(
        None,
        gt=0,
        description="LLaMA-Factory's key: stop after this many evaluations without improvement of "
        "metric_for_best_model (needs load_best_model_at_end: true and eval_strategy: steps).",
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="LLaMA-Factory's key: the smallest change that counts as an improvement."
    )
    extra_training_args: dict[str, Any] = Field(
        default={},
        description="Every other key of the installed `transformers.TrainingArguments` (e.g. "
        "`metric_for_best_model`, `load_best_model_at_end`, `optim`), written flat in the config like "
        "any key here, is collected here and passed to TrainingArguments unchanged.",
    )
    plugins: list[str] = Field(
        default=[],
        description="Python modules imported before the template and the components file are checked, "
        "so that selectors they register with @register_selector can be named in the components file and "
        "templates they register with register_template in `template`: importable module names "
        "(`my_project.selectors`, found on PYTHONPATH) or paths of `.py` files (`my_selectors.py`, "
        "relative to the current folder).",
    )

    _normalise_lists = field_validator(
        "dataset", "eval_dataset", "lora_target", "report_to", "plugins", mode="before"
    )(comma_separated)

    # (components_cfg_file it was read from, the loaded file): parsed once per config
    _components: tuple[str, Components] | None = PrivateAttr(default=None)

    def components(self) -> Components:
        """The validated ``components_cfg_file``: read on the first call, then reused.

        :func:`load_train_config` reads it while checking the config, so the runner and
        the plan use that one parse (read again only if ``components_cfg_file`` changed).

        Raises:
            ConfigError: the file is missing or invalid (see :func:`load_components`).
        """
        if self._components is None or self._components[0] != self.components_cfg_file:
            self._components = (self.components_cfg_file, load_components(self.components_cfg_file))
        return self._components[1]

    def selector_name(self) -> str:
        """Registry name of the selector ``component_name`` names (from :meth:`components`).

        Raises:
            ConfigError: as :meth:`components`, or ``component_name`` is not in the file.
        """
        return self.components().spec(self.component_name or "")[0]

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @property
    def lora_alpha_value(self) -> int:
        """``lora_alpha`` with its default (2 × rank) applied."""
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank

    @property
    def dynamic_total_steps(self) -> int | None:
        """warmup_step + update_step × update_times under dynamic_select, else None."""
        if self.train_type != "dynamic_select" or not (self.update_step and self.update_times):
            return None
        return self.warmup_step + self.update_step * self.update_times


class ExportConfig(BaseModel):
    """``dataflex-cli export`` config (the seed's merge YAML)."""

    model_config = _STRICT

    model_name_or_path: str = Field(
        description="Base model (local folder or hub id) the adapter was trained on."
    )
    adapter_name_or_path: list[str] | None = Field(
        None, description="LoRA adapter folder(s) to merge, in order; unset: re-save the model."
    )
    template: str | None = Field(
        None,
        description="The template the model was trained with: written into the exported tokenizer as "
        "its Jinja `chat_template`, so `apply_chat_template` renders the training text; unset or "
        "`tokenizer` keeps the tokenizer's own chat template.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder/hub.")
    export_dir: str = Field(description="Where the merged model and tokenizer are written.")
    overwrite_export_dir: bool = Field(
        False,
        description="Write into a non-empty export_dir that is not an earlier dataflex export (an "
        "earlier export, or an empty folder, needs no flag). Files dataflex did not write are kept; "
        "weights, configs or tokenizer files of another model there are refused.",
    )
    export_size: float = Field(5, gt=0, description="Maximum size of one safetensors shard, in GB.")
    export_device: Literal["cpu", "auto"] = Field("cpu", description="Where the merge runs: cpu or auto.")
    export_legacy_format: bool = Field(False, description="Must be false: dataflex writes safetensors only.")

    _normalise_lists = field_validator("adapter_name_or_path", mode="before")(comma_separated)


def _check_train(cfg: TrainConfig, where: str) -> None:
    """Semantic checks pydantic types cannot express."""
    if cfg.stage != "sft":
        raise ConfigError(f"{where}stage: {cfg.stage!r} is not supported; dataflex trains stage: sft only.")
    if not cfg.do_train:
        raise ConfigError(f"{where}do_train: false is not supported; `dataflex-cli train` always trains.")
    if cfg.finetuning_type not in ("lora", "full"):
        raise ConfigError(
            f"{where}finetuning_type: {cfg.finetuning_type!r} is not supported; use lora or full."
        )
    for key, value in cfg.extra_training_args.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}{key}: expected a finite number, got {value!r}.")
    if cfg.bf16 and cfg.fp16:
        raise ConfigError(f"{where}bf16 and fp16 are both true; choose one.")
    if cfg.lr_scheduler_type not in SCHEDULERS:
        raise ConfigError(
            f"{where}lr_scheduler_type: unknown scheduler {cfg.lr_scheduler_type!r}."
            + did_you_mean(cfg.lr_scheduler_type, list(SCHEDULERS))
        )
    if not cfg.dataset:
        raise ConfigError(f"{where}dataset: no dataset given.")
    if not cfg.lora_target:
        raise ConfigError(f"{where}lora_target: give `all` or module names.")
    import_plugins(cfg.plugins, where)  # before the template and components: they may register both
    try:
        check_template_name(cfg.template)
    except ConfigError as exc:
        raise ConfigError(f"{where}template: {exc}") from None
    if cfg.early_stopping_steps is not None and not (
        cfg.extra_training_args.get("load_best_model_at_end") and cfg.eval_strategy != "no"
    ):
        raise ConfigError(
            f"{where}early_stopping_steps: needs evaluations to compare (eval_strategy: steps, eval_steps) "
            "and load_best_model_at_end: true (with metric_for_best_model, default eval_loss)."
        )
    if cfg.train_type == "dynamic_select":
        _check_dynamic(cfg, where)  # first: a selector's own need of eval_dataset says more than the next
    elif cfg.component_name or cfg.update_step or cfg.update_times or cfg.warmup_step:
        logger.warning("%strain_type is static: component_name/warmup_step/update_* are not used.", where)
    if cfg.eval_strategy != "no" and not cfg.eval_dataset:
        raise ConfigError(f"{where}eval_strategy: {cfg.eval_strategy} needs an eval_dataset.")
    _check_fsdp(cfg, where)


def _selector_name_if_readable(cfg: TrainConfig) -> str | None:
    """The run's selector name, or None for a static run or one whose components file cannot be read.

    A components file that cannot be read is reported with every other input problem by
    :func:`dataflex.train.preflight.check_run_inputs`; the selector-specific FSDP checks wait for it.
    """
    if cfg.train_type != "dynamic_select":
        return None
    try:
        return cfg.selector_name()
    except ConfigError:
        return None


def _check_fsdp(cfg: TrainConfig, where: str) -> None:
    """The Trainer's ``fsdp`` / ``fsdp_config`` keys (see :mod:`dataflex.engines.fsdp`)."""
    from dataflex.engines import check_fsdp_config, has_accelerator

    extra = cfg.extra_training_args
    try:
        check_fsdp_config(
            extra.get("fsdp"),
            extra.get("fsdp_config"),
            deepspeed=cfg.deepspeed,
            selector=_selector_name_if_readable(cfg),
            gradient_checkpointing=cfg.gradient_checkpointing,
            has_accelerator=has_accelerator(),
            lora=cfg.finetuning_type == "lora",
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def import_plugins(modules: list[str], where: str = "") -> None:
    """Import the ``plugins`` modules (they register user selectors and templates as a side effect).

    An entry ending in ``.py`` is a file path (relative to the current folder), imported as
    the module named by its stem; any other entry is an importable module name.

    Raises:
        ConfigError: naming the module or file that cannot be imported and why.
    """
    for module in modules:
        if module.endswith(".py"):
            _import_plugin_file(module, where)
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"{where}plugins: cannot import {module!r} ({exc}). Install it or put it on PYTHONPATH "
                "(or give the path of its .py file)."
            ) from None


def _import_plugin_file(entry: str, where: str) -> None:
    """Import the Python file ``entry`` as module ``<stem>`` (once per process)."""
    path = Path(entry).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{where}plugins: the file {entry!r} does not exist (a .py entry is a path, relative to the "
            "current folder); fix the path, or name an importable module instead."
        )
    name, resolved = path.stem, path.resolve()
    loaded = sys.modules.get(name)
    if loaded is not None:
        loaded_file = getattr(loaded, "__file__", None)
        if loaded_file and Path(loaded_file).resolve() == resolved:
            return  # already imported (a config loaded twice): its selectors are registered
        raise ConfigError(
            f"{where}plugins: {entry!r} would be imported as module {name!r}, but that name is already "
            f"another module ({getattr(loaded, '__file__', None) or 'built in'}); rename the file."
        )
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}plugins: {entry!r} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import` does: pydantic and pickle look classes up by module name
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # an import inside the file, reported as for a module name
        del sys.modules[name]
        raise ConfigError(f"{where}plugins: cannot import {entry!r} ({exc}).") from None
    except BaseException:
        del sys.modules[name]
        raise


def _check_dynamic(cfg: TrainConfig, where: str) -> None:
    for key in ("component_name", "update_step", "update_times"):
        if getattr(cfg, key) is None:
            raise ConfigError(f"{where}{key}: required with train_type: dynamic_select.")
    if not Path(cfg.components_cfg_file).exists():
        # a missing file is reported with every other missing input, in one message, by
        # dataflex.train.preflight.check_run_inputs (before the model loads)
        return
    try:
        # Full validation: every entry's name is registered and its params are valid.
        components = cfg.components()
    except ConfigError as exc:
        raise ConfigError(f"{where}components_cfg_file: {exc}") from None
    if cfg.component_name not in components.selectors:
        raise ConfigError(
            f"{where}component_name: no selector {cfg.component_name!r} in {components.path}."
            + did_you_mean(str(cfg.component_name), components.selector_names())
        )
    name, _ = components.selectors[cfg.component_name]
    if SELECTORS.get(name).requires_eval_dataset and not cfg.eval_dataset:
        raise ConfigError(
            f"{where}eval_dataset: the {name} selector ({cfg.component_name!r}) scores training examples "
            "against a target-task validation set; set eval_dataset to the target task's examples (a "
            "dataset_info.json name or a .json/.jsonl file)."
        )


#: TrainingArguments keys a config may not set, and why (dataflex sets them itself).
REFUSED_TRAINING_ARGS = {
    "remove_unused_columns": "dataflex keeps each example's dataset/subtask columns for the selectors and "
    "reports (its collator drops them before the model), so it always sets remove_unused_columns: false",
    "label_names": "dataflex's collator always returns the targets as `labels`",
    "activation_checkpointing": "write gradient_checkpointing: dataflex passes it under the installed "
    "transformers' name",
}


def training_argument_names() -> set[str]:
    """The init keys of the installed ``transformers.TrainingArguments``."""
    import dataclasses

    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def split_training_args(raw: dict[str, Any], overrides: list[str], where: str) -> tuple[dict, list[str]]:
    """Move the pass-through ``TrainingArguments`` keys of ``raw`` and ``overrides`` aside.

    A key that is neither a dataflex key nor a ``TrainingArguments`` key stays an error
    (closest names of both suggested); one in :data:`REFUSED_TRAINING_ARGS` is refused
    with its reason.

    Returns:
        The mapping without the pass-through keys (they are under ``extra_training_args``)
        and the overrides that are dataflex keys.
    """
    own = set(TrainConfig.model_fields)
    override_keys = [item.partition("=")[0].strip() for item in overrides]
    foreign = [k for k in [*raw, *override_keys] if k not in own]
    if not foreign:
        return raw, overrides
    names = training_argument_names()
    for key in foreign:
        if key in REFUSED_TRAINING_ARGS:
            raise ConfigError(f"{where}{key}: not supported: {REFUSED_TRAINING_ARGS[key]}. Remove it.")
        if key not in names:  # neither a dataflex key nor a TrainingArguments key: a misspelling
            suggestion = did_you_mean(key, sorted(own | names))
            if key in raw:
                raise ConfigError(f"{where}{key}: unknown key {key!r}.{suggestion}")
            item = overrides[override_keys.index(key)]
            raise ConfigError(f"override {item!r}: unknown key {key!r}.{suggestion}")
    out = {k: v for k, v in raw.items() if k in own}
    extra = dict(out.get("extra_training_args") or {})
    extra.update({k: v for k, v in raw.items() if k not in own})
    kept = []
    for item, key in zip(overrides, override_keys):
        if key in own:
            kept.append(item)
        else:
            value = item.partition("=")[2]
            try:
                extra[key] = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                extra[key] = value
    out["extra_training_args"] = extra
    return out, kept


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a training YAML.

    Args:
        path: The YAML file (``None``: start from an empty mapping, overrides only).
        overrides: ``key=value`` strings applied on top, typed by :class:`TrainConfig`.

    Raises:
        ConfigError: naming the file, the key and the closest valid key.
    """
    raw = read_yaml_mapping(path) if path is not None else {}
    raw, own_overrides = split_training_args(raw, list(overrides or []), f"{path}: " if path else "")
    raw = apply_overrides(raw, own_overrides, TrainConfig)
    where = f"{path}:" if path is not None else ""
    cfg = validate_model(TrainConfig, raw, where)
    _check_train(cfg, f"{path}: " if path is not None else "")
    return cfg


def load_export_config(path: str | Path | None, overrides: list[str] | None = None) -> ExportConfig:
    """Read, override and validate an export (merge) YAML; see :func:`load_train_config`."""
    raw = read_yaml_mapping(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []), ExportConfig)
    cfg = validate_model(ExportConfig, raw, f"{path}:" if path is not None else "")
    prefix = f"{path}: " if path is not None else ""
    if cfg.export_legacy_format:
        raise ConfigError(
            f"{prefix}export_legacy_format: true is not supported; dataflex writes safetensors."
        )
    try:
        check_template_name(cfg.template)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}template: {exc}") from None
    return cfg

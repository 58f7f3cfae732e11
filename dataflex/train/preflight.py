"""Checks of a training run that need no model: run before it loads, so bad input fails in seconds.

:func:`check_run_inputs` needs only the config (every referenced file, dataset and model
path, loggers, resume, ``max_steps``) and asks no network: it runs every check of
:data:`RUN_INPUT_CHECKS` and reports all their problems in one :class:`ConfigProblems`;
:func:`check_selection_inputs` also needs the tokenised data and the selector, and
covers what a dynamic-selection run would otherwise find only after warm-up training:
what the selector's own :meth:`~dataflex.selectors.base.Selector.preflight` refuses (for
the built-ins: an eval set without the subtask field, a CUDA projector without CUDA, a
pool that runs dry across rounds, feature matrices larger than memory or disk, a
``cache_dir`` that cannot be written) and a warm-up too long to index.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.data.dataset_info import resolve_dataset
from dataflex.engines import require_deepspeed
from dataflex.errors import ConfigError
from dataflex.selectors.base import PreflightPlan
from dataflex.selectors.less_features import available_memory, gib
from dataflex.train.checkpoints import resolve_checkpoint
from dataflex.train.dynamic.layout import selection_cache_dir
from dataflex.train.dynamic.schedule import SelectionSchedule, check_max_steps

if TYPE_CHECKING:
    from dataflex.selectors.base import Selector
    from dataflex.train.config import TrainConfig

logger = logging.getLogger(__name__)

#: report_to names and the module each needs.
_LOGGER_MODULES = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "neptune": "neptune",
    "codecarbon": "codecarbon",
    "swanlab": "swanlab",
    "trackio": "trackio",
}

_INDEX_BYTES = 40
"""Memory of one selected index in the warm-up's list (a Python int and its slot)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # a module blocked in sys.modules, or a broken parent
        return False


def check_report_to(report_to: list[str]) -> None:
    """Each logger in ``report_to`` is installed.

    Raises:
        ConfigError: naming the logger and the install command.
    """
    for name in report_to:
        module = _LOGGER_MODULES.get(name)
        if module is None:
            continue
        found = _installed(module) or (name == "tensorboard" and _installed("tensorboardX"))
        if not found:
            raise ConfigError(
                f"report_to: {name!r} needs the {module} package, which is not installed: pip install "
                f"{module}, or remove {name} from report_to (report_to: none)."
            )


def check_resume(cfg: TrainConfig) -> None:
    """The checkpoint to resume is there, every file of it whole, and its LoRA settings are this config's.

    One check, in that order, because each step reads what the one before vouched for.

    Raises:
        ConfigError: the first problem (no such folder, no checkpoint in ``output_dir``, a
            damaged file, other LoRA settings).
    """
    resume = cfg.resume_from_checkpoint
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {resume!r} is not a checkpoint folder.")
    out = Path(cfg.output_dir)
    if resume is True and not (out.is_dir() and any(out.glob("checkpoint-*"))):
        raise ConfigError(
            f"resume_from_checkpoint: true, but output_dir {cfg.output_dir!r} has no checkpoint-* folder."
        )
    resolve_checkpoint(cfg)
    check_resume_adapter(cfg)


def check_resume_adapter(cfg: TrainConfig) -> None:
    """A LoRA checkpoint to resume from has the rank, alpha and dropout of this config.

    Raises:
        ConfigError: naming the key that differs (a traceback from peft otherwise).
    """
    resume = cfg.resume_from_checkpoint
    if not isinstance(resume, str) or cfg.finetuning_type != "lora":
        return
    config_file = Path(resume) / "adapter_config.json"
    if not config_file.is_file():
        return
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"resume_from_checkpoint: {config_file} is unreadable ({exc}).") from None
    for key, saved_key, value in (
        ("lora_rank", "r", cfg.lora_rank),
        ("lora_alpha", "lora_alpha", cfg.lora_alpha_value),
        ("lora_dropout", "lora_dropout", cfg.lora_dropout),
    ):
        if saved_key in saved and saved[saved_key] != value:
            raise ConfigError(
                f"{key}: {value!r}, but the checkpoint {resume!r} was trained with {key}: "
                f"{saved[saved_key]!r} ({config_file.name}); resume with the same {key}, or start a "
                "fresh run."
            )


class ConfigProblems(ConfigError):
    """Several problems of one config, found together and reported in one message.

    Attributes:
        problems: Each problem's own message (``key: what is wrong; the fix``), in check order.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            f"{len(self.problems)} problems in the config, found before anything was loaded; fix them all, "
            f"then run again:\n{lines}"
        )


Check = Callable[["TrainConfig"], object]
"""One check of :func:`check_run_inputs`: raises :class:`ConfigError` for a problem of the config."""


def collect_problems(cfg: TrainConfig, checks: Iterable[Check]) -> list[str]:
    """Run every check on ``cfg`` and return the messages of those that failed (all, not the first)."""
    problems: list[str] = []
    for check in checks:
        try:
            check(cfg)
        except ConfigProblems as exc:  # a check of several items (each dataset) reports each
            problems += exc.problems
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one :class:`ConfigError` for ``problems``: the message itself when there is one.

    Raises:
        ConfigError: one problem, as it is; :class:`ConfigProblems` listing two or more.
    """
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigProblems(problems)


def check_components_file(cfg: TrainConfig) -> None:
    """``components_cfg_file`` of a ``dynamic_select`` run exists and is valid."""
    if cfg.train_type == "dynamic_select":
        try:
            cfg.components()  # the one parse, kept on the config
        except ConfigError as exc:
            raise ConfigError(f"components_cfg_file: {exc}") from None


def check_deepspeed_file(cfg: TrainConfig) -> None:
    """A ``deepspeed`` JSON path exists, and the ``deepspeed`` package is installed."""
    if isinstance(cfg.deepspeed, str) and not Path(cfg.deepspeed).is_file():
        raise ConfigError(
            f"deepspeed: the DeepSpeed config {cfg.deepspeed!r} does not exist (relative paths are from the "
            "current folder); point it at a DeepSpeed JSON file, or remove deepspeed to train without it."
        )
    require_deepspeed(cfg.deepspeed)


def check_datasets(cfg: TrainConfig) -> None:
    """Every name of ``dataset`` and ``eval_dataset`` is a ``dataset_info.json`` entry or a file.

    Raises:
        ConfigProblems: one problem per name that does not resolve (or a ConfigError for one).
    """
    problems = []
    for key, names in (("dataset", cfg.dataset), ("eval_dataset", cfg.eval_dataset or [])):
        for name in names:
            try:
                resolve_dataset(name, cfg.dataset_dir)
            except ConfigError as exc:
                problems.append(f"{key}: {exc}")
    raise_problems(problems)


def check_model(cfg: TrainConfig) -> None:
    """``model_name_or_path`` is a model folder, or a hub id that can be fetched (no network asked)."""
    from dataflex.train.model import check_model_reference

    check_model_reference(cfg.model_name_or_path)


def check_adapter(cfg: TrainConfig) -> None:
    """An ``adapter_name_or_path`` to continue training is a folder with ``adapter_config.json``."""
    adapter = cfg.adapter_name_or_path
    if adapter and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        what = "has no adapter_config.json" if Path(adapter).expanduser().is_dir() else "does not exist"
        raise ConfigError(
            f"adapter_name_or_path: {adapter!r} {what}; point it at the folder of a LoRA adapter (a "
            "training run's output_dir or a checkpoint-* folder in it), or remove it to start a new adapter."
        )


def check_loggers(cfg: TrainConfig) -> None:
    """Each logger of ``report_to`` is installed."""
    check_report_to(list(cfg.report_to))


def check_plot_loss(cfg: TrainConfig) -> None:
    """``plot_loss: true`` has matplotlib."""
    if cfg.plot_loss and not _installed("matplotlib"):
        raise ConfigError(
            "plot_loss: true needs matplotlib: pip install 'dataflex[plots]' (or set plot_loss: false)."
        )


def check_schedule_steps(cfg: TrainConfig) -> None:
    """``max_steps`` agrees with the selection schedule (the one rule, :func:`check_max_steps`)."""
    if cfg.dynamic_total_steps is not None:
        assert cfg.update_step is not None  # dynamic_total_steps is None without both
        assert cfg.update_times is not None
        schedule = SelectionSchedule(cfg.warmup_step, cfg.update_step, cfg.update_times)
        check_max_steps(cfg.max_steps, schedule, yaml_key=True)


#: The checks of :func:`check_run_inputs`, in the order their problems are listed. Each takes
#: the config and raises ConfigError; none loads a model or asks the network. Add a check here.
RUN_INPUT_CHECKS: tuple[Check, ...] = (
    check_components_file,
    check_deepspeed_file,
    check_datasets,
    check_model,
    check_adapter,
    check_loggers,
    check_plot_loss,
    check_schedule_steps,
    check_resume,
)


def check_run_inputs(cfg: TrainConfig, extra_checks: Iterable[Check] = ()) -> None:
    """Everything about a training config that needs neither data nor model, all problems at once.

    Runs every check of :data:`RUN_INPUT_CHECKS` and then ``extra_checks`` (the runner adds
    :func:`dataflex.train.runner.check_output_dir`), without loading a model or asking the
    network, and reports every problem found in one error.

    Raises:
        ConfigError: the one problem found, as it is (a missing file, dataset or model
            folder, a model the offline cache lacks, a missing logger package, a
            ``max_steps`` the selection schedule would override, a LoRA checkpoint to
            resume with other LoRA settings); :class:`ConfigProblems` listing several.
    """
    raise_problems(collect_problems(cfg, (*RUN_INPUT_CHECKS, *extra_checks)))


def check_selection_inputs(
    cfg: TrainConfig,
    selector: Selector,
    schedule: SelectionSchedule,
    train_dataset: Sized,
    eval_dataset: Sequence[Mapping[str, Any]] | None,
    examples_per_step: int,
) -> None:
    """What a dynamic-selection run would otherwise find after the model loaded or warm-up ran.

    Raises:
        ConfigError: naming the key and the fix.
    """
    selector.preflight(
        PreflightPlan(
            pool_size=len(train_dataset),
            eval_dataset=eval_dataset,
            num_samples=examples_per_step * schedule.update_step,
            rounds=schedule.update_times,
            cache_dir=selection_cache_dir(cfg.output_dir),
        )
    )
    warmup = schedule.warmup_step * examples_per_step
    memory = available_memory()
    if memory is not None and warmup * _INDEX_BYTES > memory // 2:
        raise ConfigError(
            f"warmup_step: {schedule.warmup_step} steps x {examples_per_step} examples = {warmup} warm-up "
            f"indices, about {gib(warmup * _INDEX_BYTES)} of memory ({gib(memory)} available); lower "
            "warmup_step."
        )

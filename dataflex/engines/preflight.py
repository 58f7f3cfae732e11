"""Checks of engine combinations made before the model loads.

What is refused, and why:

* a ``deepspeed`` config without DeepSpeed installed (``pip install 'dataflex[deepspeed]'``);
* a DeepSpeed config that is not readable JSON or has no valid ``zero_optimization.stage``;
* a gradient-based selector under ZeRO-3 with trainable parameters outside ``nn.Linear``
  / ``nn.Embedding`` modules (``finetuning_type: full`` trains the norm weights): their
  per-example gradients need the ``torch.func`` fallback, which calls the module with
  its own parameters, and under ZeRO-3 those are empty shards outside the engine's
  gather. LoRA (``finetuning_type: lora``) trains only linear layers and works. The same
  holds under FSDP2 (the Trainer's ``fsdp``; see :mod:`dataflex.engines.fsdp`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from dataflex.errors import ConfigError

GRADIENT_SELECTORS = frozenset({"less", "cluster_less"})
"""Registry names of the selectors that compute per-example gradients."""


def deepspeed_installed() -> bool:
    """Whether the ``deepspeed`` package can be imported here."""
    return importlib.util.find_spec("deepspeed") is not None


def require_deepspeed(deepspeed: str | dict[str, Any] | None) -> None:
    """Refuse a ``deepspeed`` config when DeepSpeed is not installed, naming the extra.

    Raises:
        ConfigError: ``deepspeed`` is set and the ``deepspeed`` package cannot be imported.
    """
    if deepspeed is None:
        return
    if not deepspeed_installed():
        raise ConfigError(
            f"deepspeed: the config names a DeepSpeed config ({_describe(deepspeed)}) but DeepSpeed is not "
            "installed. Install it with: pip install 'dataflex[deepspeed]' "
            "(or remove the deepspeed key to train with DDP)."
        )


def _describe(deepspeed: str | dict[str, Any]) -> str:
    return repr(deepspeed) if isinstance(deepspeed, str) else "a dict"


def read_json_config(path: str, key: str, label: str) -> object:
    """The JSON a config key names by path (a DeepSpeed or FSDP config file).

    Raises:
        ConfigError: naming ``key``, when the file is missing or not valid JSON.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}: the {label} {path!r} does not exist.")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: {path!r} is not valid JSON ({exc}).") from None


def deepspeed_stage(deepspeed: str | dict[str, Any]) -> int:
    """The ZeRO stage (0-3) of a DeepSpeed config given as a JSON path or a dict.

    Raises:
        ConfigError: the file is missing or not JSON, or the stage is not 0-3.
    """
    if isinstance(deepspeed, str):
        config = read_json_config(deepspeed, "deepspeed", "DeepSpeed config")
    else:
        config = deepspeed
    zero = config.get("zero_optimization", {}) if isinstance(config, dict) else {}
    stage = zero.get("stage", 0) if isinstance(zero, dict) else None
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"deepspeed: zero_optimization.stage must be 0, 1, 2 or 3; got {stage!r}.")
    return int(stage)


def check_engine_config(
    deepspeed: str | dict[str, Any] | None,
    *,
    finetuning_type: str,
    selector: str | None,
    fsdp: bool = False,
) -> None:
    """Refuse, before the model loads, an engine combination that cannot score.

    Args:
        deepspeed: The config's ``deepspeed`` value (path, dict or None).
        finetuning_type: ``lora`` or ``full``.
        selector: Registry name of the run's selector (None for a static run).
        fsdp: Whether the run trains under FSDP2 (the config's ``fsdp``, checked by
            :func:`~dataflex.engines.fsdp.check_fsdp_config`).

    Raises:
        ConfigError: with the reason and the alternative.
    """
    require_deepspeed(deepspeed)
    if deepspeed is None and not fsdp:
        return
    engine = "FSDP2" if fsdp else "DeepSpeed ZeRO-3"
    if not fsdp and deepspeed_stage(deepspeed) != 3:  # type: ignore[arg-type]
        return
    if selector in GRADIENT_SELECTORS and finetuning_type != "lora":
        other = "a ZeRO-2 config" if not fsdp else "a DeepSpeed ZeRO-2 config"
        raise ConfigError(
            f"finetuning_type: {finetuning_type} with the {selector!r} selector under {engine} is "
            "not supported: it trains norm weights, whose per-example gradients are computed by calling the "
            f"module with its own parameters, and {engine} holds only {'a' if fsdp else 'an empty'} shard of "
            f"them outside its gather. Use finetuning_type: lora, or {other} (parameters whole on every "
            "rank), or DDP."
        )

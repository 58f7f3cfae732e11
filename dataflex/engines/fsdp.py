"""The Trainer's own ``fsdp`` / ``fsdp_config`` keys, read and checked before anything loads.

``transformers.TrainingArguments`` maps ``fsdp`` (``true``, or LLaMA-Factory's legacy
``"full_shard auto_wrap"`` strings) and ``fsdp_config`` (a dict or a JSON file; keys with
or without the ``fsdp_`` prefix) onto accelerate's ``FullyShardedDataParallelPlugin``;
dataflex passes both through unchanged and lets transformers do that mapping. What is
checked here is what transformers would accept silently or refuse only after the model
loaded, and the combinations the scoring passes cannot serve:

* ``fsdp_config`` without ``fsdp`` (transformers ignores it: the run would be DDP),
  unknown keys (ignored too; accelerate-config names get their ``TrainingArguments`` name),
  ``fsdp`` options that are not FSDP2's;
* FSDP1 (``version: 1``): flat parameters, whose Adam moments and shapes cannot be read
  per parameter;
* ``fsdp`` together with ``deepspeed``, and FSDP's ``activation_checkpointing`` together
  with ``gradient_checkpointing`` (transformers refuses both, but only in the Trainer);
* ``xla``: dataflex does not run on XLA;
* ``auto_wrap_policy: SIZE_BASED_WRAP``: accelerate's FSDP2 size policy also picks
  containers without a ``forward`` (peft's ``lora_A`` ``ModuleDict``), which ``fully_shard``
  refuses once the model is loaded;
* ``cpu_offload`` on a machine without an accelerator (parameters already live in CPU
  memory) and, anywhere, with a gradient selector (the scoring pass gathers the full
  weights and Adam moments with collectives on the training device, and offloaded
  shards live in CPU memory);
* FSDP's ``activation_checkpointing`` with a gradient selector: tried, the selections
  equal DDP's, but its checkpoint wrappers rename the layers' parameters and the LoRA
  adapter saved at the end came out empty (``gradient_checkpointing: true`` works).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataflex.engines.preflight import GRADIENT_SELECTORS, read_json_config
from dataflex.errors import ConfigError

#: ``fsdp_config`` keys of the installed transformers (``fsdp_`` prefix removed).
FSDP2_KEYS = frozenset(
    {
        "version",
        "reshard_after_forward",
        "cpu_offload",
        "activation_checkpointing",
        "cpu_ram_efficient_loading",
        "state_dict_type",
        "auto_wrap_policy",
        "transformer_layer_cls_to_wrap",
        "min_num_params",
        "xla",
        "xla_fsdp_settings",
        "xla_fsdp_grad_ckpt",
        "xla_fsdp_v2",
    }
)
FSDP1_KEYS = frozenset(
    {"forward_prefetch", "backward_prefetch", "use_orig_params", "sync_module_states", "limit_all_gathers"}
)
#: accelerate-config (``accelerate config``) names and what ``TrainingArguments`` calls them.
ACCELERATE_NAMES = {
    "offload_params": "cpu_offload",
    "sharding_strategy": "reshard_after_forward (true: full_shard, false: shard_grad_op)",
    "transformer_cls_names_to_wrap": "transformer_layer_cls_to_wrap",
}
WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
FSDP2_OPTIONS = ("full_shard", "shard_grad_op", "offload", "auto_wrap")
FSDP1_OPTIONS = ("no_shard", "hybrid_shard", "hybrid_shard_zero2")


@dataclass(frozen=True)
class FsdpOptions:
    """What a config's ``fsdp`` / ``fsdp_config`` ask of FSDP, as far as dataflex must know.

    Attributes:
        config: ``fsdp_config`` read (from its file) with the ``fsdp_`` prefixes removed.
        cpu_offload: ``cpu_offload: true`` or the ``offload`` option.
        activation_checkpointing: FSDP's own activation checkpointing.
    """

    config: dict[str, Any]
    cpu_offload: bool
    activation_checkpointing: bool


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _options(fsdp: object) -> list[str] | None:
    """The legacy option names of ``fsdp`` (``[]`` for ``true``), or None when FSDP is off."""
    if fsdp is None or fsdp is False or fsdp == "":
        return None
    if fsdp is True:
        return []
    if isinstance(fsdp, str):
        return [] if _truthy(fsdp) else fsdp.split()
    if isinstance(fsdp, list) and all(isinstance(item, str) for item in fsdp):
        return list(fsdp)
    raise ConfigError(
        f"fsdp: {fsdp!r} is not an FSDP setting; write fsdp: true and put the options in fsdp_config "
        '(or LLaMA-Factory\'s fsdp: "full_shard auto_wrap").'
    )


def fsdp_enabled(fsdp: object) -> bool:
    """Whether a config's ``fsdp`` value turns FSDP on (``true``, or a string/list of options).

    Raises:
        ConfigError: for a value that is not an FSDP setting.
    """
    return _options(fsdp) is not None


def _read_config(fsdp_config: object) -> dict[str, Any]:
    if fsdp_config is None:
        return {}
    if isinstance(fsdp_config, str):
        fsdp_config = read_json_config(fsdp_config, "fsdp_config", "FSDP config file")
    if not isinstance(fsdp_config, dict):
        raise ConfigError(
            f"fsdp_config: expected a mapping (or the path of a JSON file holding one); got {fsdp_config!r}."
        )
    return fsdp_config


def _bare(key: str) -> str:
    """A key without its ``fsdp_`` prefix (transformers accepts every key with or without it)."""
    return key[5:] if key.startswith("fsdp_") else key


def _check_keys(raw: dict[str, Any]) -> None:
    from dataflex.registry import did_you_mean

    for name in raw:
        key = _bare(str(name))
        if key in FSDP2_KEYS or key in FSDP1_KEYS:
            continue
        if key in ACCELERATE_NAMES:
            hint = f" That is accelerate config's name; TrainingArguments calls it {ACCELERATE_NAMES[key]}."
        else:
            hint = did_you_mean(key, sorted(FSDP2_KEYS))
        raise ConfigError(f"fsdp_config: unknown key {name!r} (transformers would ignore it silently).{hint}")


def read_fsdp_options(fsdp: object, fsdp_config: object) -> FsdpOptions | None:
    """Read and check ``fsdp`` / ``fsdp_config`` as ``TrainingArguments`` will see them.

    Returns:
        None when FSDP is off, else the options dataflex needs to know.

    Raises:
        ConfigError: ``fsdp_config`` without ``fsdp``, a missing or malformed ``fsdp_config``,
            an unknown key or option, FSDP1, or XLA; naming the key and the fix.
    """
    options = _options(fsdp)
    raw = _read_config(fsdp_config)
    config = {_bare(str(k)): v for k, v in raw.items()}
    if options is None:
        if fsdp_config is not None:
            raise ConfigError(
                "fsdp_config: is used only together with fsdp, which is not set, so the run would train with "
                "DDP. Add fsdp: true (FSDP2), or remove fsdp_config."
            )
        return None
    _check_keys(raw)
    version = config.get("version", 2)
    if str(version) not in ("1", "2"):
        raise ConfigError(f"fsdp_config: version must be 2 (FSDP2); got {version!r}.")
    if str(version) == "1" or any(k in FSDP1_KEYS for k in config):
        what = "version: 1" if str(version) == "1" else f"{sorted(k for k in config if k in FSDP1_KEYS)}"
        raise ConfigError(
            f"fsdp_config: {what} asks for FSDP1 (FullyShardedDataParallel), which dataflex does not "
            "support: its flat parameters hide the per-parameter shapes and Adam moments the selectors "
            "read, and transformers deprecates it. Use FSDP2: fsdp_config: {version: 2} (the default), "
            "without the FSDP1-only keys."
        )
    for item in options:
        if item in FSDP1_OPTIONS:
            raise ConfigError(
                f"fsdp: {item!r} is an FSDP1 sharding strategy; FSDP2 offers full_shard (reshard after "
                "forward) and shard_grad_op (keep the gathered weights until the backward). Use one of those."
            )
        if item not in FSDP2_OPTIONS:
            raise ConfigError(f"fsdp: unknown option {item!r}; the options are {', '.join(FSDP2_OPTIONS)}.")
    if _truthy(config.get("xla", False)) or _truthy(config.get("xla_fsdp_v2", False)):
        raise ConfigError("fsdp_config: xla: true is not supported: dataflex does not run on XLA. Remove it.")
    policy = config.get("auto_wrap_policy", WRAP_POLICIES[0])
    if policy not in WRAP_POLICIES:
        raise ConfigError(
            f"fsdp_config: auto_wrap_policy must be one of {', '.join(WRAP_POLICIES)}; got {policy!r}."
        )
    if policy == "SIZE_BASED_WRAP":
        raise ConfigError(
            "fsdp_config: auto_wrap_policy: SIZE_BASED_WRAP is not supported: accelerate's FSDP2 size policy "
            "also wraps container modules (peft's lora_A / lora_B ModuleDicts, the model's ModuleList of "
            'layers), which fully_shard refuses ("containers that do not implement forward") after the '
            "model loaded. Use TRANSFORMER_BASED_WRAP (the default: one unit per decoder layer) or NO_WRAP."
        )
    return FsdpOptions(
        config=config,
        cpu_offload="offload" in options or _truthy(config.get("cpu_offload", False)),
        activation_checkpointing=_truthy(config.get("activation_checkpointing", False)),
    )


def check_fsdp_config(
    fsdp: object,
    fsdp_config: object,
    *,
    deepspeed: object,
    selector: str | None,
    gradient_checkpointing: bool,
    has_accelerator: bool,
    lora: bool = False,
) -> FsdpOptions | None:
    """Refuse, before anything loads, an FSDP setup that cannot train or cannot be scored.

    Args:
        fsdp: The config's ``fsdp`` value.
        fsdp_config: The config's ``fsdp_config`` value (dict, JSON path or None).
        deepspeed: The config's ``deepspeed`` value.
        selector: Registry name of the run's selector (None for a static run).
        gradient_checkpointing: The config's ``gradient_checkpointing``.
        has_accelerator: Whether this machine has an accelerator (CUDA, ...).
        lora: Whether the run trains a LoRA adapter.

    Returns:
        The options (None when FSDP is off).

    Raises:
        ConfigError: with the reason and the fix.
    """
    options = read_fsdp_options(fsdp, fsdp_config)
    if options is None:
        return None
    if deepspeed is not None:
        raise ConfigError(
            "fsdp: and deepspeed: are both set; they are two ways of sharding the same model and cannot be "
            "combined. Remove one of them."
        )
    if options.activation_checkpointing and gradient_checkpointing:
        raise ConfigError(
            "fsdp_config: activation_checkpointing: true and gradient_checkpointing: true recompute the same "
            "activations twice (transformers refuses the pair). Keep one of them."
        )
    gradients = selector in GRADIENT_SELECTORS
    if options.cpu_offload and not has_accelerator:
        raise ConfigError(
            "fsdp_config: cpu_offload (or the fsdp option offload) needs an accelerator: on this machine the "
            "parameters already live in CPU memory. Remove it."
        )
    if options.cpu_offload and gradients:
        raise ConfigError(
            f"fsdp_config: cpu_offload with the {selector!r} selector is not supported: its scoring pass "
            "gathers the full weights and Adam moments with collectives on the training device, and "
            "offloaded shards live in CPU memory. Remove cpu_offload, or use DeepSpeed ZeRO-3 "
            "(deepspeed: ...)."
        )
    if options.activation_checkpointing and gradients:
        raise ConfigError(
            f"fsdp_config: activation_checkpointing with the {selector!r} selector is not supported: its "
            "checkpoint wrappers rename the decoder layers' parameters, and the LoRA adapter saved at the "
            "end of the run came out empty. Use gradient_checkpointing: true instead (it is off during "
            "scoring), or neither."
        )
    if options.activation_checkpointing and lora:
        raise ConfigError(
            "fsdp_config: activation_checkpointing with LoRA is not supported: its checkpoint wrappers "
            "rename the decoder layers' parameters, and a LoRA adapter saved under them came out empty. "
            "Use gradient_checkpointing: true instead, or neither."
        )
    return options

"""Loading the tokenizer and model, and turning the model into a LoRA or full fine-tune."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

import torch

from dataflex.engines import full_numel
from dataflex.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

TrainableModel: TypeAlias = "PreTrainedModel | PeftModel"
"""The model a run trains: a transformers causal LM, or peft's LoRA wrapper of one."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(name: str) -> bool:
    """Whether ``name`` can only mean a local path (so the hub is not asked about it).

    True for ``./x``, ``/x``, ``~/x``, backslashes, more than one ``/``, names that are
    not valid hub ids, and ``a/b`` whose first part ``a`` is an existing local folder
    (``saves/my-run``, ``models/llama``).
    """
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if not _HUB_ID.match(name) or "--" in name or ".." in name:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def check_local_path(value: str, key: str) -> None:
    """Refuse a value of ``key`` that looks like a local path but does not exist.

    Raises:
        ConfigError: naming ``key`` and the missing path.
    """
    if looks_local(value) and not Path(value).expanduser().exists():
        raise ConfigError(f"{key}: the path {value!r} does not exist.")


def check_model_reference(name: str, key: str = "model_name_or_path") -> bool:
    """Check ``name`` without asking the hub: a model folder, or a hub id that may be fetched.

    A local folder must hold ``config.json``; a name that can only be a local path must
    exist; a hub id must be in the local Hugging Face cache when the hub is offline
    (``HF_HUB_OFFLINE=1``), where a download could not succeed.

    Returns:
        True when ``name`` is a hub id the cache does not hold, so only the hub can tell
        whether it exists (:func:`check_model_path` asks it, once).

    Raises:
        ConfigError: naming ``key``, what is missing and the fix.
    """
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}: {name!r} has no config.json; point it at a model folder.")
        return False
    if looks_local(name):
        parent = path.parent
        hint = (
            f" ({str(parent)!r} exists but has no {path.name!r})"
            if parent.is_dir() and str(parent) != "."
            else ""
        )
        raise ConfigError(
            f"{key}: the model path {name!r} does not exist{hint}; it looks like a local path, so the "
            "hub was not asked. Fix the path (relative paths are from the current directory)."
        )
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return False
    if is_offline_mode():
        raise ConfigError(
            f"{key}: {name!r} is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE=1 "
            f"forbids downloading it, so the hub was not asked. Download it where the hub is reachable "
            f"(hf download {name}), or set {key} to a local model folder."
        )
    return True


def _ask_hub_once(name: str, key: str) -> None:
    """One request, without retries, for ``name``'s ``config.json`` (the downloads retry for ~40 s)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), retry_on_errors=False)
    except GatedRepoError:
        raise ConfigError(
            f"{key}: {name!r} is a gated model on the hub; accept its license on its hub page and log in "
            "(hf auth login), or set it to a local model folder."
        ) from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{key}: the hub has no model {name!r} (or it is private and you are not logged in: hf auth "
            "login). Check the spelling, or set it to a local model folder."
        ) from None
    except HfHubHTTPError as exc:
        raise ConfigError(f"{key}: the hub refused {name!r} ({str(exc).splitlines()[0]}).") from None
    except Exception as exc:  # the request did not complete: DNS, connection, proxy, timeout
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise ConfigError(
            f"{key}: {name!r} is not a local folder and not in the Hugging Face cache, and the hub cannot "
            f"be reached ({type(exc).__name__}: {detail}). Check the network (or HF_ENDPOINT, the proxy), "
            f"download the model where the hub is reachable (hf download {name}), or set {key} to a local "
            "model folder."
        ) from None


def check_model_path(
    name: str, trust_remote_code: bool = False, key: str = "model_name_or_path"
) -> PretrainedConfig:
    """Check that ``name`` is a loadable model and return its ``AutoConfig``.

    :func:`check_model_reference` first; a hub id the cache does not hold is then asked
    for once, without retries, before transformers fetches its config.

    Raises:
        ConfigError: a local path that does not exist or has no ``config.json``, or a hub
            id whose config cannot be fetched (offline, private, misspelled).
    """
    from transformers import AutoConfig

    if check_model_reference(name, key):
        _ask_hub_once(name, key)
    path = Path(name).expanduser()
    try:
        return AutoConfig.from_pretrained(
            str(path) if path.exists() else name, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{key}: cannot load the model config of {name!r}: it is not a local folder and the hub "
            f"lookup failed ({str(exc).splitlines()[0]})."
        ) from None


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``name`` and make sure it can pad (EOS pads when there is no PAD)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of {name!r} has neither a pad nor an eos token.")
        logger.info("tokenizer has no pad token; padding with the eos token %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(bf16: bool, fp16: bool) -> torch.dtype:
    """The dtype the base weights are loaded in for the precision flags."""
    return torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32


def load_model(
    name: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    device_map: str | dict[str, int | str] | None = None,
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` with the given dtype (``use_cache`` off)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map
    )
    model.config.use_cache = False
    return model


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """Leaf names of the linear layers LoRA can target (the output head excluded)."""
    out_head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not out_head
    }
    return sorted(names)


def load_adapter(model: torch.nn.Module, adapter: str) -> PeftModel:
    """Wrap ``model`` with the LoRA adapter in folder ``adapter``, its weights trainable and float32.

    Raises:
        ConfigError: when the folder has no ``adapter_config.json``, or its weights are damaged or
            do not fit ``model``.
    """
    from peft import PeftModel

    from dataflex.train.adapter_files import ADAPTER_FIX, load_errors_named

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"adapter_name_or_path: {adapter!r} has no adapter_config.json.")
    with load_errors_named(f"adapter_name_or_path: {adapter!r}", ADAPTER_FIX), _peft_on_transformers():
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    _trainable_in_float32(peft_model)
    return peft_model


@contextlib.contextmanager
def _peft_on_transformers() -> Iterator[None]:
    """Around peft's wrapping of a transformers model: without one deprecation no user can act on.

    peft reads ``model.is_gradient_checkpointing`` (``PeftModel.__init__``), which transformers
    deprecated for ``is_activation_checkpointing`` with a FutureWarning on every run. Only that
    warning, only inside this block, is dropped; every other warning passes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def _trainable_in_float32(model: torch.nn.Module) -> None:
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def apply_finetuning(
    model: TrainableModel,
    finetuning_type: str,
    *,
    lora_target: list[str],
    lora_rank: int,
    lora_alpha: int,
    lora_dropout: float,
    adapter_name_or_path: str | None = None,
    gradient_checkpointing: bool = False,
) -> TrainableModel:
    """Make the trainable parameters: a LoRA adapter (new or loaded) or the whole model.

    Trainable parameters are kept in float32 even when the base is bf16/fp16, so the
    optimizer state and updates stay exact.

    Raises:
        ConfigError: a ``lora_target`` module the model does not have (closest names
            suggested), or an adapter folder without ``adapter_config.json``.
    """
    from peft import LoraConfig, get_peft_model

    if finetuning_type == "full":
        if adapter_name_or_path:
            raise ConfigError("adapter_name_or_path needs finetuning_type: lora.")
        model.requires_grad_(True)
    else:
        if adapter_name_or_path:
            model = load_adapter(model, adapter_name_or_path)
        else:
            valid = linear_module_names(cast("PreTrainedModel", model))  # the base: LoRA wraps it below
            if lora_target != ["all"]:
                for target in lora_target:
                    if target not in valid:
                        raise ConfigError(
                            f"lora_target: the model has no linear module {target!r}."
                            + did_you_mean(target, valid)
                        )
            config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules="all-linear" if lora_target == ["all"] else lora_target,
                task_type="CAUSAL_LM",
            )
            with _peft_on_transformers():
                model = get_peft_model(model, config)
        if gradient_checkpointing:
            model.enable_input_require_grads()
    _trainable_in_float32(model)
    # full sizes: under ZeRO-3 (zero.Init) the loaded weights are already empty local shards
    trainable = sum(full_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(full_numel(p) for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.4f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model

"""``dataflex-cli export``: merge LoRA adapters into the base model and save safetensors shards."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dataflex.data.jinja import check_chat_template, template_to_jinja
from dataflex.data.templates import TOKENIZER_TEMPLATE
from dataflex.errors import ConfigError
from dataflex.io import OutputLock, apply_default_modes, check_replaceable, check_writable_dir, write_marker
from dataflex.registry import TEMPLATES
from dataflex.train.adapter_files import ADAPTER_FIX, check_adapter, load_errors_named
from dataflex.train.config import ExportConfig
from dataflex.train.model import check_model_path, load_model, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or inside it."""
    return a == b or b in a.parents


def check_export(cfg: ExportConfig) -> Path:
    """Validate paths before loading anything; returns the resolved ``export_dir``."""
    check_model_path(cfg.model_name_or_path, cfg.trust_remote_code)
    export_dir = Path(cfg.export_dir).expanduser().resolve()
    if export_dir.exists() and not export_dir.is_dir():
        raise ConfigError(f"export_dir: {cfg.export_dir!r} is a file, not a folder.")
    check_writable_dir(cfg.export_dir, "export_dir")
    if not cfg.overwrite_export_dir:
        check_replaceable(export_dir, "export_dir", "export", flag="overwrite_export_dir")
    sources = [Path(a).expanduser().resolve() for a in cfg.adapter_name_or_path or []]
    for name, path in zip(cfg.adapter_name_or_path or [], sources):
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(
                f"adapter_name_or_path: {name!r} has no adapter_config.json "
                "(point it at the output_dir of a LoRA run)."
            )
        check_adapter(name)
    model_path = Path(cfg.model_name_or_path).expanduser()
    if model_path.exists():
        sources.append(model_path.resolve())
    for src in sources:
        if _inside(src, export_dir) or _inside(export_dir, src):
            raise ConfigError(
                f"export_dir: {cfg.export_dir!r} overlaps the input {str(src)!r}; choose another."
            )
    return export_dir


def run_export(cfg: ExportConfig) -> Path:
    """Merge ``adapter_name_or_path`` into ``model_name_or_path`` and save it to ``export_dir``.

    The merged model is written to a temporary folder beside ``export_dir`` and swapped
    in only when complete, as safetensors shards of at most ``export_size`` GB, with the
    tokenizer (the adapter folder's, when it has one); a named ``template`` becomes the
    tokenizer's ``chat_template`` (:func:`set_chat_template`), so ``apply_chat_template``
    on the export renders the text the model was trained on. An existing ``export_dir`` is
    replaced only when it is empty, an earlier dataflex export (it carries the
    ``.dataflex.json`` marker) or ``overwrite_export_dir: true``; it is moved aside and
    deleted after the swap, so a failed export leaves it intact.

    Returns:
        The export folder, loadable by ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ConfigError: a missing model or adapter, an ``export_dir`` overlapping them, a
            non-empty ``export_dir`` that dataflex did not write, or a ``template`` that
            cannot be written as the tokenizer's chat template.
    """
    from peft import PeftModel

    export_dir = check_export(cfg)
    adapters = cfg.adapter_name_or_path or []
    tok_source = cfg.model_name_or_path
    if adapters and any((Path(adapters[-1]) / f).is_file() for f in _TOKENIZER_FILES):
        tok_source = adapters[-1]
    tokenizer = load_tokenizer(tok_source, cfg.trust_remote_code)
    set_chat_template(tokenizer, cfg.template)  # before the model loads: a refusal costs nothing
    model = load_model(
        cfg.model_name_or_path,
        dtype="auto",
        trust_remote_code=cfg.trust_remote_code,
        device_map="auto" if cfg.export_device == "auto" else None,
    )
    for adapter in adapters:
        with load_errors_named(f"adapter_name_or_path: {adapter!r}", ADAPTER_FIX):
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        logger.info("merged adapter %s", adapter)
    model.config.use_cache = True

    export_dir.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(export_dir, key="export_dir", lock_path=export_dir.parent / f".{export_dir.name}.lock"):
        _save_and_swap(model, tokenizer, export_dir, int(cfg.export_size * 1e9))
    return export_dir  # dataflex-cli export prints it, once


def set_chat_template(tokenizer: PreTrainedTokenizerBase, name: str | None) -> None:
    """Write the named template into ``tokenizer.chat_template``, checked against the probes.

    ``None`` or ``"tokenizer"`` keeps the tokenizer's own chat template (what such a run
    trained on).

    Raises:
        ConfigError: the template needs a BOS/EOS token the tokenizer lacks, or its Jinja
            form renders a probe conversation differently
            (:func:`~dataflex.data.jinja.check_chat_template`).
    """
    if name is None or name == TOKENIZER_TEMPLATE:
        return
    template = TEMPLATES.get(name)  # load_export_config checked the name
    bos, eos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)
    try:
        tokenizer.chat_template = template_to_jinja(template, bos, eos)
        check_chat_template(template, tokenizer)
    except ConfigError as exc:
        raise ConfigError(f"template: {exc}") from None
    logger.info("the exported tokenizer's chat_template is template %r", name)


def _save_and_swap(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, export_dir: Path, shard_bytes: int
) -> None:
    """Save into a temporary folder beside ``export_dir``, then swap it in."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=export_dir.parent))
    old: Path | None = None
    try:
        model.save_pretrained(tmp, max_shard_size=shard_bytes)
        tokenizer.save_pretrained(tmp)
        write_marker(tmp, "export")
        apply_default_modes(tmp)  # mkdtemp made it 0700; respect the umask like other tools
        if export_dir.exists():
            old = (
                Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old-", dir=export_dir.parent)) / "previous"
            )
            os.replace(export_dir, old)
            logger.info("replacing the existing %s", export_dir)
        try:
            os.replace(tmp, export_dir)
        except BaseException:
            if old is not None:
                os.replace(old, export_dir)  # put the previous export back
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if old is not None:
        shutil.rmtree(old.parent)

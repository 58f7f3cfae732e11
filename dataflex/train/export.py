"""``dataflex-cli export``: merge LoRA adapters into the base model and save safetensors shards."""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dataflex.data.jinja import check_chat_template, template_to_jinja
from dataflex.data.templates import TOKENIZER_TEMPLATE
from dataflex.errors import ConfigError
from dataflex.io import (
    MARKER,
    OutputLock,
    apply_default_modes,
    atomic_write,
    check_no_overlap,
    check_replaceable,
    check_writable_dir,
    foreign_entries,
    write_marker,
)
from dataflex.registry import TEMPLATES
from dataflex.train.adapter_files import ADAPTER_FIX, check_adapter, load_errors_named
from dataflex.train.config import ExportConfig
from dataflex.train.model import check_model_path, load_model, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

#: Names that ``from_pretrained`` of a model or tokenizer reads (or an export writes): a
#: foreign file of this kind beside an export would be overwritten or mixed into it.
_LOADER_FILES = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json", "*.gguf", "config.json",
    "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json",
    "chat_template.*", "vocab.*", "merges.txt", "*.model", "preprocessor_config.json",
    "adapter_config.json",
)  # fmt: skip


def _read_by_loaders(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _LOADER_FILES)


def check_export(cfg: ExportConfig) -> Path:
    """Validate paths before loading anything; returns the resolved ``export_dir``."""
    check_model_path(cfg.model_name_or_path, cfg.trust_remote_code)
    export_dir = Path(cfg.export_dir).expanduser().resolve()
    if export_dir.exists() and not export_dir.is_dir():
        raise ConfigError(f"export_dir: {cfg.export_dir!r} is a file, not a folder.")
    check_no_overlap(  # before the write probe, which would land in an input folder
        cfg.export_dir,
        "export_dir",
        {"model_name_or_path": cfg.model_name_or_path, "adapter_name_or_path": cfg.adapter_name_or_path},
    )
    check_writable_dir(cfg.export_dir, "export_dir")
    if not cfg.overwrite_export_dir:
        check_replaceable(export_dir, "export_dir", "export", flag="overwrite_export_dir")
    in_the_way = [n for n in foreign_entries(export_dir, "export") if _read_by_loaders(n)]
    if in_the_way:
        raise ConfigError(
            f"export_dir: {cfg.export_dir!r} holds files that dataflex did not write and that a model "
            f"loaded from it would also read ({', '.join(in_the_way)}); dataflex never deletes or overwrites "
            "files it did not write. Move or delete them, or choose an empty or new export_dir."
        )
    for name in cfg.adapter_name_or_path or []:
        if not (Path(name).expanduser() / "adapter_config.json").is_file():
            raise ConfigError(
                f"adapter_name_or_path: {name!r} has no adapter_config.json "
                "(point it at the output_dir of a LoRA run)."
            )
        check_adapter(name)
    return export_dir


def run_export(cfg: ExportConfig) -> Path:
    """Merge ``adapter_name_or_path`` into ``model_name_or_path`` and save it to ``export_dir``.

    The merged model is written to a temporary folder beside ``export_dir`` and swapped
    in only when complete, as safetensors shards of at most ``export_size`` GB, with the
    tokenizer (the adapter folder's, when it has one); a named ``template`` becomes the
    tokenizer's ``chat_template`` (:func:`set_chat_template`), so ``apply_chat_template``
    on the export renders the text the model was trained on. An existing ``export_dir`` is
    written into only when it is empty, an earlier dataflex export (it carries the
    ``.dataflex.json`` marker, which records the files that export wrote) or
    ``overwrite_export_dir: true``. Only dataflex's own earlier files are replaced: other
    files stay, and one that a model loader would read (``config.json``, weights,
    tokenizer files) is refused before the model loads. A folder holding only an earlier
    export is swapped whole, so a failed export leaves it intact; beside other files the
    new files are moved in one by one and a failure moves everything back.

    Returns:
        The export folder, loadable by ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ConfigError: a missing model or adapter, an ``export_dir`` overlapping them, a
            non-empty ``export_dir`` that dataflex did not write, files of someone else's in
            the way, or a ``template`` that cannot be written as the tokenizer's chat template.
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
    """Save into a temporary folder beside ``export_dir``, then swap it in.

    Files in ``export_dir`` that dataflex did not write (:func:`foreign_entries`) stay
    where they are: only the previous export's own files are replaced.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=export_dir.parent))
    try:
        model.save_pretrained(tmp, max_shard_size=shard_bytes)
        tokenizer.save_pretrained(tmp)
        written = sorted(p.name for p in tmp.iterdir())
        write_marker(tmp, "export", files=written)
        apply_default_modes(tmp)  # mkdtemp made it 0700; respect the umask like other tools
        keep = foreign_entries(export_dir, "export")
        if keep:
            _replace_in_place(tmp, export_dir, written, keep)
        else:
            _swap_folder(tmp, export_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _swap_folder(tmp: Path, export_dir: Path) -> None:
    """Put ``tmp`` in the place of ``export_dir`` (which holds nothing but an earlier export)."""
    old: Path | None = None
    if export_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old-", dir=export_dir.parent)) / "previous"
        os.replace(export_dir, old)
        logger.info("replacing the existing %s", export_dir)
    try:
        os.replace(tmp, export_dir)
    except BaseException:
        if old is not None:
            os.replace(old, export_dir)  # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old.parent)


def _replace_in_place(tmp: Path, export_dir: Path, written: list[str], keep: list[str]) -> None:
    """Move the new export's files into ``export_dir`` past the files ``keep`` names, which stay.

    The marker first records the old and the new files together, so a run killed half
    way leaves a folder whose every dataflex file is still known as dataflex's; any
    other failure moves everything back.

    Raises:
        ConfigError: a file of ``keep`` has the name of a file the export wrote.
    """
    clash = sorted(set(written) & set(keep))
    if clash:
        raise ConfigError(
            f"export_dir: {str(export_dir)!r} holds {', '.join(clash)}, which dataflex did not write and the "
            "export would overwrite; move them, or choose an empty or new export_dir."
        )
    logger.info("export_dir %s: keeping the files dataflex did not write (%s)", export_dir, ", ".join(keep))
    ours = sorted(p.name for p in export_dir.iterdir() if p.name not in keep and p.name != MARKER)
    marker = export_dir / MARKER
    previous = marker.read_bytes() if marker.is_file() else None
    write_marker(export_dir, "export", files=sorted(set(ours) | set(written)))
    old = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old-", dir=export_dir.parent))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in ours:
            os.replace(export_dir / name, old / name)
            moved_out.append(name)
        for name in written:
            os.replace(tmp / name, export_dir / name)
            moved_in.append(name)
        os.replace(tmp / MARKER, marker)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(export_dir / name, tmp / name)
        for name in reversed(moved_out):
            os.replace(old / name, export_dir / name)
        if previous is None:
            marker.unlink(missing_ok=True)
        else:
            atomic_write(marker, previous)
        raise
    finally:
        shutil.rmtree(old)

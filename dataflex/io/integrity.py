"""One integrity scheme for every file dataflex writes and later reads back.

:func:`write_verified` writes the file atomically and then a ``<name>.sha256`` sidecar
holding the SHA-256 of its bytes; :func:`read_verified` reads the bytes and refuses
them unless the sidecar exists and matches. The sidecar is written last, so a file
without one was never completed (a crash or a full disk while writing) and a file
whose digest differs was changed or damaged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from dataflex.errors import ConfigError, DataflexError
from dataflex.io.atomic import Writer, atomic_write

SIDECAR_SUFFIX = ".sha256"


class IntegrityError(DataflexError):
    """A file dataflex wrote is incomplete, damaged or changed since it was written."""


def sidecar(path: str | os.PathLike) -> Path:
    """The checksum file of ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def write_verified(path: str | os.PathLike, content: bytes | str | Writer) -> Path:
    """Write ``content`` atomically (:func:`~dataflex.io.atomic_write`), then its checksum.

    Returns:
        ``path``.
    """
    path = Path(path)
    sidecar(path).unlink(missing_ok=True)  # the old checksum must never vouch for new bytes
    atomic_write(path, content)
    atomic_write(sidecar(path), f"{_sha256_file(path)}  {path.name}\n")
    return path


def verify(path: str | os.PathLike) -> None:
    """Check ``path`` against its checksum file.

    Raises:
        IntegrityError: the file or its checksum is missing, or they disagree.
    """
    path = Path(path)
    expected = _expected(path)
    if _sha256_file(path) != expected:
        raise IntegrityError(f"{path} is damaged or was changed after dataflex wrote it (checksum mismatch).")


def _expected(path: Path) -> str:
    if not path.is_file():
        raise IntegrityError(f"{path} is missing.")
    check = sidecar(path)
    try:
        text = check.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        text = []
    if not text or len(text[0]) != 64:
        raise IntegrityError(
            f"{path} is incomplete: its checksum file {check.name} is missing or unreadable, so it was "
            "never finished (the run stopped or the disk filled while it was written)."
        )
    return text[0]


def read_verified(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, checked against its checksum file.

    Raises:
        IntegrityError: see :func:`verify`.
    """
    path = Path(path)
    expected = _expected(path)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(f"{path} is damaged or was changed after dataflex wrote it (checksum mismatch).")
    return data


def remove_verified(path: str | os.PathLike) -> None:
    """Delete a verified file and its checksum (missing ones are fine)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def check_safetensors(path: str | os.PathLike) -> None:
    """Check that a safetensors file (ours or another tool's) is whole: header and data length.

    Reads only the header, so it is cheap for multi-gigabyte shards.

    Raises:
        IntegrityError: naming the file when it is truncated, padded or has no valid header.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 0 < header_len <= size - 8:
                raise ValueError(f"header length {header_len} in a {size}-byte file")
            header = json.loads(fh.read(header_len))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise IntegrityError(
            f"{path} is not a valid safetensors file ({exc}); it is damaged or truncated."
        ) from None
    if 8 + header_len + end != size:
        raise IntegrityError(
            f"{path} is truncated or damaged: its header describes {8 + header_len + end} bytes, the file "
            f"has {size}."
        )


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = 0x80  # a legacy (non-zip) torch.save file starts with a pickle protocol opcode


def check_torch_file(path: str | os.PathLike) -> None:
    """Check that a ``torch.save`` file (``optimizer.pt``, ``rng_state.pth``, ...) is whole.

    The zip format torch writes ends with its central directory, so a truncated file has
    none; each member must also lie inside the file. Only the directory is read, not the
    tensors. A legacy (pickle) file cannot be checked without loading it and is left alone.

    Raises:
        IntegrityError: naming the file when it is empty, truncated or not a torch file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:1] and magic[0] == _PICKLE_MAGIC:
        return
    if magic != _ZIP_MAGIC:
        what = "empty" if size == 0 else "not a torch.save file"
        raise IntegrityError(f"{path} is {what}; it is damaged or truncated.")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            end = max((i.header_offset + len(i.FileHeader()) + i.compress_size for i in members), default=0)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise IntegrityError(f"{path} is truncated or damaged ({exc}).") from None
    if end > size:
        raise IntegrityError(
            f"{path} is truncated or damaged: its members end at byte {end}, the file has {size}."
        )


def check_json_file(path: str | os.PathLike) -> None:
    """Check that a JSON file another tool wrote (``trainer_state.json``, ...) parses.

    Raises:
        IntegrityError: naming the file when it is empty, truncated or not JSON.
    """
    path = Path(path)
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is not valid JSON ({exc}); it is damaged or truncated.") from None


def check_folder_files(folder: str | os.PathLike) -> None:
    """Every file of a model, adapter or checkpoint folder that can be checked cheaply is whole.

    ``*.safetensors`` against their header (:func:`check_safetensors`), ``torch.save`` files
    (``*.pt``, ``*.pth``, ``*.bin``) against their zip directory (:func:`check_torch_file`) and
    ``*.json`` by parsing them (:func:`check_json_file`); only the folder's own files are read.
    Files with a checksum sidecar are dataflex's own, checked against it when read (:func:`read_verified`).

    Raises:
        IntegrityError: naming the first damaged file.
    """
    checks = {".safetensors": check_safetensors, ".json": check_json_file}
    checks.update(dict.fromkeys((".pt", ".pth", ".bin"), check_torch_file))
    for f in sorted(Path(folder).iterdir()):
        check = checks.get(f.suffix)
        if check is not None and f.is_file() and not sidecar(f).is_file():
            check(f)


def check_inputs_whole(folders: list[str], key: str) -> None:
    """Every ``*.safetensors`` file in these folders is whole (``""`` entries are skipped).

    Raises:
        ConfigError: naming ``key`` and the truncated or damaged file.
    """
    for folder in folders:
        if not folder or not Path(folder).is_dir():
            continue
        for f in sorted(Path(folder).glob("*.safetensors")):
            try:
                check_safetensors(f)
            except IntegrityError as exc:
                raise ConfigError(f"{key}: {exc}") from None

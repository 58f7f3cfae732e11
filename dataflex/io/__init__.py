"""How dataflex touches the disk: one way to write, one fingerprint, one integrity scheme.

* :mod:`~dataflex.io.atomic`: atomic, fsynced writes with the umask's permissions;
* :mod:`~dataflex.io.digest`: canonical JSON fingerprints and content digests of files;
* :mod:`~dataflex.io.integrity`: SHA-256 sidecars checked on every read-back;
* :mod:`~dataflex.io.json_types`: ``JSONValue``, the type of what JSON can hold;
* :mod:`~dataflex.io.lock`: the output-folder lock;
* :mod:`~dataflex.io.owned`: the "written by dataflex" marker and safe file names;
* :mod:`~dataflex.io.text`: reading a user's text file with a clear error.
"""

from dataflex.io.atomic import (
    apply_default_modes,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    dir_mode,
    file_mode,
)
from dataflex.io.digest import (
    FingerprintError,
    canonical_json,
    file_digest,
    fingerprint_digest,
    fingerprint_key,
    folder_digest,
    sha256_hex,
    source_identity,
)
from dataflex.io.integrity import (
    IntegrityError,
    check_folder_files,
    check_inputs_whole,
    check_json_file,
    check_safetensors,
    check_torch_file,
    read_verified,
    remove_verified,
    verify,
    write_verified,
)
from dataflex.io.json_types import JSONObject, JSONValue
from dataflex.io.lock import LOCK_FILE, OutputLock
from dataflex.io.owned import (
    MARKER,
    check_no_overlap,
    check_replaceable,
    check_writable_dir,
    foreign_entries,
    is_empty_dir,
    is_marked,
    path_inside,
    read_marker,
    safe_file_name,
    write_marker,
)
from dataflex.io.text import read_user_text

__all__ = [
    "LOCK_FILE",
    "MARKER",
    "FingerprintError",
    "IntegrityError",
    "JSONObject",
    "JSONValue",
    "OutputLock",
    "apply_default_modes",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "canonical_json",
    "check_folder_files",
    "check_inputs_whole",
    "check_json_file",
    "check_no_overlap",
    "check_replaceable",
    "check_safetensors",
    "check_torch_file",
    "check_writable_dir",
    "dir_mode",
    "file_digest",
    "file_mode",
    "fingerprint_digest",
    "fingerprint_key",
    "folder_digest",
    "foreign_entries",
    "is_empty_dir",
    "is_marked",
    "path_inside",
    "read_marker",
    "read_user_text",
    "read_verified",
    "remove_verified",
    "safe_file_name",
    "sha256_hex",
    "source_identity",
    "verify",
    "write_marker",
    "write_verified",
]

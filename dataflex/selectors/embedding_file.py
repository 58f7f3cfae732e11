"""A precomputed embedding file for the embedding-space selectors, validated before any model loads.

The file is a safetensors file (nothing is unpickled) holding:

* ``train``: ``(N, d)`` floating-point embeddings of pool examples;
* ``eval``: ``(M, d)`` embeddings of the validation examples, in eval-dataset order;
* ``train_indices`` (optional): ``(N,)`` integer pool index of each ``train`` row, distinct and
  ``>= 0``; without it, row ``i`` is pool example ``i`` and ``N`` must equal the pool size.

:func:`read_embedding_file` checks keys, dtypes, shapes and finiteness when the config is
read; :meth:`EmbeddingFile.check_pool` checks the index range against the pool size once
the datasets are tokenised, before the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataflex.errors import ConfigError

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTS = (torch.int32, torch.int64)


@dataclass
class EmbeddingFile:
    """The validated contents of an embedding file."""

    path: Path
    train: torch.Tensor
    eval: torch.Tensor
    train_indices: torch.Tensor | None

    def pool_indices(self) -> np.ndarray:
        """The pool index of each ``train`` row."""
        if self.train_indices is None:
            return np.arange(self.train.shape[0], dtype=np.int64)
        return self.train_indices.numpy().astype(np.int64)

    def check_pool(self, pool_size: int) -> None:
        """Raise unless the file's rows are valid indices of a pool of ``pool_size``."""
        rows = self.train.shape[0]
        if self.train_indices is None and rows != pool_size:
            raise ConfigError(
                f"embedding file {self.path}: 'train' has {rows} rows but the pool has {pool_size} examples; "
                "give one row per pool example, or add 'train_indices' naming the pool example of each row."
            )
        if self.train_indices is not None and rows and int(self.train_indices.max()) >= pool_size:
            raise ConfigError(
                f"embedding file {self.path}: 'train_indices' holds {int(self.train_indices.max())}, out of "
                f"range for a pool of {pool_size} examples (valid: 0..{pool_size - 1})."
            )

    def check_eval(self, eval_size: int) -> None:
        """Raise unless ``eval`` has one row per validation example."""
        if self.eval.shape[0] != eval_size:
            raise ConfigError(
                f"embedding file {self.path}: 'eval' has {self.eval.shape[0]} rows but the eval dataset has "
                f"{eval_size} examples; give one row per eval example, in order."
            )

    def rows_for(self, pool_indices: np.ndarray) -> torch.Tensor:
        """The ``train`` rows of ``pool_indices`` (each must be in the file), fp64."""
        lookup = {int(p): r for r, p in enumerate(self.pool_indices())}
        return self.train[[lookup[int(p)] for p in pool_indices]].double()


def read_embedding_file(path: str | Path) -> EmbeddingFile:
    """Read and validate ``path``; every problem is a :class:`ConfigError` naming the fix."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"embedding file {path} does not exist.")
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"embedding file {path} is not a readable safetensors file ({exc}).") from None
    unknown = set(tensors) - {"train", "eval", "train_indices"}
    missing = {"train", "eval"} - set(tensors)
    if unknown or missing:
        raise ConfigError(
            f"embedding file {path}: expected tensors 'train', 'eval' and optionally 'train_indices'; "
            + (f"missing {sorted(missing)}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown {sorted(unknown)}" if unknown else "")
            + "."
        )
    train, val = tensors["train"], tensors["eval"]
    for name, t in (("train", train), ("eval", val)):
        if t.dtype not in _FLOATS:
            raise ConfigError(f"embedding file {path}: '{name}' has dtype {t.dtype}; expected a float dtype.")
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ConfigError(
                f"embedding file {path}: '{name}' has shape {tuple(t.shape)}; expected non-empty (rows, dim)."
            )
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"embedding file {path}: '{name}' holds NaN or infinite values.")
    if train.shape[1] != val.shape[1]:
        raise ConfigError(
            f"embedding file {path}: 'train' has dimension {train.shape[1]} but 'eval' has {val.shape[1]}."
        )
    idx = tensors.get("train_indices")
    if idx is not None:
        if idx.dtype not in _INTS or idx.dim() != 1 or idx.shape[0] != train.shape[0]:
            raise ConfigError(
                f"embedding file {path}: 'train_indices' must be int32/int64 of shape ({train.shape[0]},), "
                f"got {idx.dtype} {tuple(idx.shape)}."
            )
        if int(idx.min()) < 0 or len(torch.unique(idx)) != len(idx):
            raise ConfigError(f"embedding file {path}: 'train_indices' must be distinct pool indices >= 0.")
    return EmbeddingFile(path, train, val, idx)

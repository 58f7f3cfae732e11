"""A map-style torch dataset of tokenised SFT examples that knows its composition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

from torch.utils.data import Dataset

MISSING = "?"


def composition(
    examples: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None, key: str = "dataset"
) -> dict[str, int] | None:
    """How many of ``examples[indices]`` (all when ``indices`` is None) have each value of ``key``.

    Returns the counts sorted by value, examples without ``key`` counted under ``"?"``,
    or ``None`` when none of them has ``key`` (the data carries no such metadata);
    ``{}`` for no examples.
    """
    chosen = [examples[int(i)] for i in indices] if indices is not None else list(examples)
    if not chosen:
        return {}
    if not any(isinstance(e, Mapping) and e.get(key) is not None for e in chosen):
        return None
    counts = Counter(str(e[key]) if e.get(key) is not None else MISSING for e in chosen)
    return dict(sorted(counts.items()))


class SFTDataset(Dataset):
    """Tokenised examples (``input_ids``, ``labels``, ``dataset``[, ``subtask``]) by index.

    Selectors read examples by index (``ds[i]``) and may use the metadata keys; the
    collator drops them.
    """

    def __init__(self, examples: Sequence[dict[str, Any]]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]

    def composition(self, key: str = "dataset") -> dict[str, int]:
        """How many examples have each value of metadata ``key`` (e.g. per source dataset)."""
        return composition(self.examples, key=key) or {}

    def num_tokens(self) -> tuple[int, int]:
        """(total tokens, trained-on tokens) over the dataset."""
        total = sum(len(e["input_ids"]) for e in self.examples)
        trained = sum(sum(1 for x in e["labels"] if x != -100) for e in self.examples)
        return total, trained


def as_examples(dataset: SFTDataset | None) -> Sequence[Mapping[str, Any]] | None:
    """``dataset`` as what a selector reads: examples by index and a length, all SFTDataset has."""
    return cast("Sequence[Mapping[str, Any]] | None", dataset)

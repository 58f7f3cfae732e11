"""A map-style torch dataset of tokenised SFT examples that knows its composition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset


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
        return dict(sorted(Counter(str(e.get(key, "?")) for e in self.examples).items()))

    def num_tokens(self) -> tuple[int, int]:
        """(total tokens, trained-on tokens) over the dataset."""
        total = sum(len(e["input_ids"]) for e in self.examples)
        trained = sum(sum(1 for x in e["labels"] if x != -100) for e in self.examples)
        return total, trained

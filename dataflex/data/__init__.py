"""Datasets, templates, tokenisation with prompt masking, and the collator."""

from dataflex.data.collator import IGNORE_INDEX, SFTDataCollator

__all__ = ["IGNORE_INDEX", "SFTDataCollator"]

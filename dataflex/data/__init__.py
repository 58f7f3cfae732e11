"""Datasets, templates, tokenisation with prompt masking, and the collator."""

from dataflex.data.collator import IGNORE_INDEX, SFTDataCollator
from dataflex.data.dataset_info import DatasetAttr, resolve_dataset
from dataflex.data.loader import load_dataset_examples, resolve_datasets
from dataflex.data.sft_dataset import SFTDataset
from dataflex.data.templates import (
    ChatTemplate,
    Template,
    get_template,
    list_templates,
    register_template,
)
from dataflex.data.tokenize import TokenizeStats, tokenize_examples

__all__ = [
    "IGNORE_INDEX",
    "ChatTemplate",
    "DatasetAttr",
    "SFTDataCollator",
    "SFTDataset",
    "Template",
    "TokenizeStats",
    "get_template",
    "list_templates",
    "load_dataset_examples",
    "register_template",
    "resolve_dataset",
    "resolve_datasets",
    "tokenize_examples",
]

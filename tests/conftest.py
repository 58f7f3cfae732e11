"""Shared fixtures: tiny models built from configs, synthetic tokenised examples."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data" / "llamafactory"


@pytest.fixture(autouse=True)
def _dataflex_logs_reach_caplog():
    """dataflex's logger does not propagate by default; let pytest's caplog see its records."""
    from dataflex.logging_utils import disable_propagation, enable_propagation

    enable_propagation()
    yield
    disable_propagation()


@pytest.fixture(autouse=True)
def fresh_once(monkeypatch):
    """Forget what this process already said once (``log_once``), so no test sees another's notes."""
    from dataflex import logging_utils

    monkeypatch.setattr(logging_utils, "_said_once", set())


@pytest.fixture
def shared_data() -> Path:
    """The LLaMA-Factory demo datasets beside the checkout (skips when absent)."""
    if not (SHARED_DATA / "dataset_info.json").is_file():
        pytest.skip(f"../shared is not beside this checkout ({SHARED_DATA} missing)")
    return SHARED_DATA


def make_tiny_llama(
    vocab_size: int = 64, hidden_size: int = 32, layers: int = 2, seed: int = 0, **config: object
):
    """A randomly initialised Llama small enough for exact CPU tests.

    ``config`` overrides any other ``LlamaConfig`` field (biases, tied embeddings, heads...).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    fields = {
        "intermediate_size": 2 * hidden_size,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        **config,
    }
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=layers, **fields)
    )
    model.config.use_cache = False
    return model


@pytest.fixture
def tiny_llama():
    """Factory fixture: ``tiny_llama(seed=0, ...)`` returns a fresh tiny Llama."""
    return make_tiny_llama


def make_examples(n: int, vocab_size: int = 64, min_len: int = 4, max_len: int = 12, seed: int = 0):
    """``n`` tokenised SFT examples of mixed lengths with a masked prompt."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab_size) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "dataset": f"d{i % 3}"})
    return out


@pytest.fixture
def examples():
    """Factory fixture: ``examples(n, ...)`` returns synthetic tokenised examples."""
    return make_examples

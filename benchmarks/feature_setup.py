"""Shared setting of the feature benchmarks: a small Llama on alpaca_en_demo, with real Adam state.

A randomly initialised Llama built from a config (vocabulary and tokenizer of the
quickstart model), trained for a few AdamW steps on the pool so that gradients and
Adam moments are those of a model in training, not of an untouched initialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = REPO / "examples" / "quickstart" / "model"
SHARED_DATA = REPO.parent / "shared" / "data" / "llamafactory"
if not SHARED_DATA.is_dir():  # a worktree next to /work/shared
    SHARED_DATA = Path("/work/shared/data/llamafactory")


@dataclass
class Setting:
    """A model ready for feature passes, its data and its optimizer."""

    name: str
    model: Any
    optimizer: Any
    examples: list[dict[str, Any]]
    collator: Any
    dim: int


def tokenised_pool(min_tokens: int = 0, max_tokens: int = 10**9, cutoff: int = 256) -> list[dict[str, Any]]:
    """alpaca_en_demo tokenised with the quickstart tokenizer (default template), filtered by length."""
    from transformers import AutoTokenizer

    from dataflex.data import load_dataset_examples
    from dataflex.data.templates import get_template
    from dataflex.data.tokenize import tokenize_examples

    tok = AutoTokenizer.from_pretrained(QUICKSTART_MODEL)
    rows = load_dataset_examples("alpaca_en_demo", SHARED_DATA)
    examples, _ = tokenize_examples(rows, tok, get_template("default", tok), cutoff, num_workers=1)
    return [e for e in examples if min_tokens <= len(e["input_ids"]) <= max_tokens]


def build(
    name: str,
    *,
    hidden: int = 256,
    layers: int = 4,
    lora_rank: int | None = 16,
    train_steps: int = 8,
    examples: list[dict[str, Any]] | None = None,
    seed: int = 0,
) -> Setting:
    """A Llama of ``hidden``/``layers`` (LoRA r=``lora_rank`` on all linear layers, or full FT)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from dataflex.data.collator import SFTDataCollator
    from dataflex.gradients import num_trainable

    base = json.loads((QUICKSTART_MODEL / "config.json").read_text())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=base["vocab_size"],
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=512,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if lora_rank is not None:
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(
            model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets, lora_dropout=0.0)
        )
    examples = tokenised_pool() if examples is None else examples
    collator = SFTDataCollator(pad_token_id=base["pad_token_id"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(train_steps):
        pick = torch.randint(len(examples), (8,), generator=g).tolist()
        batch = collator([examples[i] for i in pick])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return Setting(name, model, optimizer, examples, collator, num_trainable(model))

"""One LESS round in the seed's configuration, timed: run it with this checkout and with another.

The seed's setting: the quickstart model (0.5M parameters, LoRA r = 16 on every linear
layer), the alpaca_en_demo pool as candidates, 16 identity.json examples as the target
set, ``gradient_type: adam`` (real moments after 4 AdamW steps), ``proj_dim: 4096``,
the selector's default projector and batch size, no cache. The round goes through the
public selector API (``build_selector("less", ...).select``), so the same script times
any checkout: put it first on ``PYTHONPATH``.

    PYTHONPATH=. python benchmarks/seed_round.py                    # this checkout
    PYTHONPATH=/path/to/main:. python benchmarks/seed_round.py      # before (e.g. main)
    python benchmarks/seed_round.py --max-candidates 256            # a quicker look
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.feature_setup import QUICKSTART_MODEL, SHARED_DATA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-candidates", type=int, default=None)
    p.add_argument("--proj-dim", type=int, default=4096)
    p.add_argument("--projector", default=None, help="default: the selector's default (auto)")
    p.add_argument("--cutoff", type=int, default=1024)
    args = p.parse_args()
    torch.set_num_threads(1)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import dataflex
    from dataflex.data import load_dataset_examples
    from dataflex.data.collator import SFTDataCollator
    from dataflex.data.templates import get_template
    from dataflex.data.tokenize import tokenize_examples
    from dataflex.registry import build_selector
    from dataflex.selectors.base import SelectionContext

    tok = AutoTokenizer.from_pretrained(QUICKSTART_MODEL)
    template = get_template("default", tok)
    pool, _ = tokenize_examples(
        load_dataset_examples("alpaca_en_demo", SHARED_DATA), tok, template, args.cutoff
    )
    val, _ = tokenize_examples(
        load_dataset_examples("identity", SHARED_DATA)[:16], tok, template, args.cutoff
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(QUICKSTART_MODEL)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0))
    collator = SFTDataCollator(pad_token_id=tok.pad_token_id or 0)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    for step in range(4):
        loss = model(**collator(pool[16 * step : 16 * step + 16])).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    params = {"proj_dim": args.proj_dim, "seed": 123, "gradient_type": "adam", "cache_dir": None}
    if args.max_candidates:
        params["max_candidates"] = args.max_candidates
    if args.projector:
        params["projector"] = args.projector
    selector = build_selector("less", **params)
    ctx = SelectionContext(
        model=model,
        optimizer=opt,
        train_dataset=pool,
        eval_dataset=val,
        collator=collator,
        learning_rate=1e-3,
        step=4,
        round=1,
        seed=0,
    )
    n = max(1, min(len(pool) // 4, 64))
    t0 = time.perf_counter()
    selection = selector.select(ctx, n)
    seconds = time.perf_counter() - t0
    meta = selection.metadata
    out = {
        "dataflex": dataflex.__file__,
        "candidates": meta.get("candidates"),
        "projector": params.get("projector", "default"),
        "round_s": round(seconds, 2),
        **{
            k: meta[k]
            for k in ("time_features_s", "time_scoring_s", "time_io_s", "feature_phases")
            if k in meta
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

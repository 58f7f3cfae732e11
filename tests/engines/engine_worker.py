"""One selection round of ``less`` and ``loss`` under an engine, on this process's rank.

Run by the engine tests on 2 gloo processes (``torch.multiprocessing``) and, for the
reference, on 1 process with ``engine="reference"``: the same LoRA tiny Llama takes
one AdamW step on the same global batch of 4 (2 per rank under an engine; the
reference averages the two halves' gradients as DDP does), then each selector scores
the pool. Results are JSON: indices, scores, the trainable count and proof that no
parameter gradient was written.
"""

from __future__ import annotations

import faulthandler
import json
import os
from typing import Any

import torch
import torch.distributed as dist

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.gradients import num_trainable
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from tests.conftest import make_examples, make_tiny_llama

LR, BETAS, EPS = 1e-2, (0.9, 0.99), 1e-6
SPECS: dict[str, dict[str, Any]] = {
    # 9 candidates on 2 ranks with batch 2: 3 batches on rank 0, 2 on rank 1 (padding needed)
    "less": {"projector": "rademacher", "proj_dim": 16, "seed": 7, "batch_size": 2},
    "less_identity": {"projector": "identity", "batch_size": 2},
    "loss": {"focus": "high", "temperature": 0.0, "batch_size": 2},
    # token-budget batches: rank 0 runs 4 candidate batches, rank 1 3 (and a padding batch)
    "less_tokens": {"projector": "identity", "batch_size": 4, "max_batch_tokens": 14},
}
POOL, VAL, BUDGET = 9, 3, 4
HANG_AFTER_S = 300
# One candidate: rank 1 has no rows and must still join rank 0's collective forwards.
ONE = {"less_one": {"projector": "identity", "max_candidates": 1}, "loss_one": {"max_candidates": 1}}


def lora_model() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    model = make_tiny_llama(seed=2)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    torch.manual_seed(3)
    model = get_peft_model(model, cfg)
    # LoRA's B starts at 0; give it values so that the base path and both matrices matter.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def train_batch() -> list[dict]:
    return make_examples(4, seed=31)


def ds_config(stage: int) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 4,
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
        # 0: partition every parameter (the default keeps tiny ones whole, testing nothing)
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    }


def optimizer_for(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)


def build(engine: str, rank: int) -> tuple[torch.nn.Module, Any, Any]:
    """The model to score on, its optimizer and a function taking one more training step.

    The model has taken one step on the global batch.
    """
    model = lora_model()
    collate = SFTDataCollator(0)
    batch = train_batch()
    if engine == "reference":
        opt = optimizer_for([p for p in model.parameters() if p.requires_grad])

        def step() -> None:
            for half in (batch[:2], batch[2:]):
                (model(**collate(half)).loss / 2).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        return model, opt, step
    local = collate(batch[2 * rank : 2 * rank + 2])
    if engine.startswith("zero"):
        import deepspeed

        opt = optimizer_for([p for p in model.parameters() if p.requires_grad])
        ds_engine, ds_opt, _, _ = deepspeed.initialize(
            model=model, optimizer=opt, config=ds_config(int(engine[-1]))
        )

        def step() -> None:
            ds_engine.backward(ds_engine(**local).loss)
            ds_engine.step()

        step()
        return ds_engine.module, ds_opt, step
    if engine == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        opt = optimizer_for([p for p in model.parameters() if p.requires_grad])

        def step() -> None:
            model(**local).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        return model, opt, step
    raise ValueError(engine)


def run(engine: str, rank: int, world: int) -> dict[str, Any]:
    """Select with every spec after one step, check the state, take a second step."""
    from dataflex.engines import engine_of, full_adam_state, full_tensors

    model, opt, step = build(engine, rank)
    pool, val = make_examples(POOL, seed=21), make_examples(VAL, seed=22)
    out: dict[str, Any] = {"engine": engine_of(model).value, "trainable": num_trainable(model)}
    moments = full_adam_state(model, opt)
    out["adam"] = {
        n: [m.exp_avg.flatten().tolist(), m.exp_avg_sq.flatten().tolist()] for n, m in moments.items()
    }
    out["hparams"] = sorted({(m.beta1, m.beta2, m.eps) for m in moments.values()})
    for name, spec in {**SPECS, **ONE}.items():
        ctx = SelectionContext(
            model=model,
            optimizer=opt,
            train_dataset=pool,
            eval_dataset=val,
            collator=SFTDataCollator(0),
            learning_rate=LR,
            step=1,
            round=1,
            dist=DistributedView(rank, world),
            seed=13,
        )
        kind = name.split("_")[0]
        sel = build_selector(kind, **spec).select(ctx, 1 if name in ONE else BUDGET)
        out[name] = {"indices": sel.indices, "scores": sel.scores, "transform": sel.metadata.get("transform")}
    out["grads_written"] = [n for n, p in model.named_parameters() if p.grad is not None]
    # Scoring left the training state alone: the next step is the reference's next step.
    step()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out["after_step_2"] = {n: t.flatten().tolist() for n, t in full_tensors(trainable)}
    return out


def worker(rank: int, world: int, engines: list[str], init_file: str, out_dir: str) -> None:
    """Run each of ``engines`` in turn on this rank; write ``<engine>-<rank>.json``."""
    faulthandler.dump_traceback_later(HANG_AFTER_S, exit=True)  # a deadlock fails instead of hanging
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if any(e.startswith("zero") for e in engines):
            import deepspeed

            deepspeed.init_distributed(dist_backend="gloo")
        for engine in engines:
            result = run(engine, rank, world)
            with open(f"{out_dir}/{engine}-{rank}.json", "w") as fh:
                json.dump(result, fh)
        dist.barrier()
    finally:
        dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()

"""Two gloo processes give the selection of one, and split the per-example work between them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.errors import DataflexError
from dataflex.registry import build_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector
from dataflex.train.dynamic import DynamicSelectionSampler, SelectionSchedule
from tests.conftest import make_examples, make_tiny_llama

SPECS = {
    "less": {"projector": "identity", "batch_size": 2},
    "loss": {"focus": "high", "temperature": 0.7, "seed": 5, "batch_size": 2},
    # a seeded draw of 5 of the 9 candidates: every rank must draw the same ones
    "less_draw": {"projector": "identity", "batch_size": 2, "candidate_fraction": 0.5},
}
ROWS = {"less": 9 + 3, "loss": 9, "less_draw": 5 + 3}  # candidates + validation examples


class RankDependent(Selector):
    """A broken selector: each rank returns its own indices."""

    def select(self, ctx, num_samples):
        return Selection(indices=[(i + ctx.dist.rank) % 9 for i in range(num_samples)])


def _diverging(view: DistributedView) -> str:
    """The sampler's cross-rank check on a selector whose ranks disagree."""
    sampler = DynamicSelectionSampler(RankDependent(), SelectionSchedule(0, 1, 1), 9, 2)
    ctx = SelectionContext(model=None, optimizer=None, train_dataset=[{}] * 9, round=1, dist=view)
    try:
        sampler.select_round(1, ctx)
    except DataflexError as exc:
        return str(exc)
    return "no error"


def _run(kind: str, view: DistributedView) -> dict:
    torch.manual_seed(0)
    model = make_tiny_llama(seed=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pool, val = make_examples(9, seed=21), make_examples(3, seed=22)
    batch = SFTDataCollator(0)(pool[:3])
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad()
    rows = [0]

    def count(module, args, kwargs):
        rows[0] += kwargs["input_ids"].shape[0]

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    ctx = SelectionContext(
        model=model,
        optimizer=opt,
        train_dataset=pool,
        eval_dataset=val,
        collator=SFTDataCollator(0),
        learning_rate=1e-3,
        step=1,
        round=1,
        dist=view,
        seed=13,
    )
    sel = build_selector(kind.split("_")[0], **SPECS[kind]).select(ctx, 4)
    handle.remove()
    return {"indices": sel.indices, "scores": sel.scores, "rows": rows[0], "meta": sel.metadata}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = {kind: _run(kind, DistributedView(rank, world)) for kind in SPECS}
        result["diverging"] = _diverging(DistributedView(rank, world))
        dist.barrier()  # both ranks done before either tears down its gloo pairs
    finally:
        dist.destroy_process_group()
    with open(f"{out_dir}/{rank}.json", "w") as fh:
        json.dump(result, fh)


def test_two_processes_match_one_and_share_the_work(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for kind in SPECS:
        single = _run(kind, DistributedView())
        for res in results:
            assert res[kind]["indices"] == single["indices"]
            assert res[kind]["scores"] == pytest.approx(single["scores"], abs=1e-6)
        # every example went through the model on exactly one rank
        assert sum(r[kind]["rows"] for r in results) == single["rows"] == ROWS[kind]
    assert results[0]["less_draw"]["meta"]["candidates"] == 5
    for res in results:  # every rank sees the divergence and says which selector caused it
        assert "returned different selections on different ranks" in res["diverging"]

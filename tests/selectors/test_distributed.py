"""Two gloo processes give the selection of one, and split the per-example work between them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.errors import DataflexError
from dataflex.registry import build_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector
from dataflex.train.dynamic import DynamicSelectionSampler, SelectionSchedule
from tests.conftest import make_examples, make_tiny_llama
from tests.selectors.gloo_ranks import run_on_ranks

SPECS = {
    "less": {"projector": "identity", "batch_size": 2},
    "loss": {"focus": "high", "temperature": 0.7, "seed": 5, "batch_size": 2},
    # a seeded draw of 5 of the 9 candidates: every rank must draw the same ones
    "less_draw": {"projector": "identity", "batch_size": 2, "candidate_fraction": 0.5},
    "near": {"batch_size": 2},
    "tsds": {"max_k": 6, "kde_k": 4, "sigma": 0.2, "alpha": 0.3, "seed": 5, "batch_size": 2},
    "cluster_less": {"num_clusters": 3, "representatives": 1, "projector": "identity", "batch_size": 2},
}
# rows through the model: candidates + validation examples, each once; cluster_less embeds
# the 9 candidates and computes LESS features of 3 representatives and the 3 validation rows
SELECTOR = {"less_draw": "less"}  # a SPECS key that is not the registry name
ROWS = {"less": 9 + 3, "loss": 9, "less_draw": 5 + 3, "near": 9 + 3, "tsds": 9 + 3, "cluster_less": 9 + 3 + 3}


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
    sel = build_selector(SELECTOR.get(kind, kind), **SPECS[kind]).select(ctx, 4)
    handle.remove()
    return {"indices": sel.indices, "scores": sel.scores, "rows": rows[0], "meta": sel.metadata}


def _every_kind(view: DistributedView) -> dict[str, Any]:
    result: dict[str, Any] = {kind: _run(kind, view) for kind in SPECS}
    result["diverging"] = _diverging(view)
    return result


def test_two_processes_match_one_and_share_the_work(tmp_path):
    results = run_on_ranks(_every_kind, tmp_path)
    for kind in SPECS:
        single = _run(kind, DistributedView())
        for res in results:
            assert res[kind]["indices"] == single["indices"], kind
            assert res[kind]["scores"] == pytest.approx(single["scores"], abs=1e-6)
        # every example went through the model on exactly one rank
        assert sum(r[kind]["rows"] for r in results) == single["rows"] == ROWS[kind], kind
    assert results[0]["less_draw"]["meta"]["candidates"] == 5
    for res in results:  # every rank sees the divergence and says which selector caused it
        assert "returned different selections on different ranks" in res["diverging"]

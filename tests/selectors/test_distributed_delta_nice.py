"""``delta_loss`` and ``nice`` under two gloo processes: the selection of one, the work split."""

from __future__ import annotations

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from tests.conftest import make_examples, make_tiny_llama
from tests.selectors.gloo_ranks import run_on_ranks


def _ctx(model, opt, pool, val, view, round_):
    return SelectionContext(
        model=model,
        optimizer=opt,
        train_dataset=pool,
        eval_dataset=val,
        collator=SFTDataCollator(0),
        learning_rate=1e-3,
        step=round_,
        round=round_,
        dist=view,
        seed=13,
        total_rounds=3,
    )


def _step(model, opt, batch):
    model(**SFTDataCollator(0)(batch)).loss.backward()
    opt.step()
    opt.zero_grad()


def _run(view: DistributedView) -> dict:
    torch.manual_seed(0)
    model = make_tiny_llama(seed=2, vocab_size=32, hidden_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pool, val = make_examples(9, vocab_size=32, seed=21), make_examples(3, vocab_size=32, seed=22)
    _step(model, opt, pool[:3])
    rows, counting = [0], [True]

    def count(module, args, kwargs):
        if counting[0]:
            rows[0] += kwargs["input_ids"].shape[0]

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    out = {}
    delta = build_selector("delta_loss", batch_size=2, repeat_across_rounds=True, window_size=0.5)
    first = delta.select(_ctx(model, opt, pool, val, view, 1), 3)
    counting[0] = False
    _step(model, opt, pool[3:6])
    counting[0] = True
    second = delta.select(_ctx(model, opt, pool, val, view, 2), 3)
    out["delta_loss"] = {"indices": [first.indices, second.indices], "scores": second.scores, "rows": rows[0]}
    rows[0] = 0
    nice = build_selector("nice", projector="identity", metric="rouge_l", mc_samples=2, max_new_tokens=3)
    sel = nice.select(_ctx(model, opt, pool, val, view, 2), 4)
    out["nice"] = {"indices": [sel.indices], "scores": sel.scores, "rows": rows[0]}
    handle.remove()
    return out


def test_two_processes_match_one_and_share_the_work(tmp_path):
    results = run_on_ranks(_run, tmp_path)
    single = _run(DistributedView())
    for kind in ("delta_loss", "nice"):
        for res in results:
            assert res[kind]["indices"] == single[kind]["indices"], kind
            assert res[kind]["scores"] == pytest.approx(single[kind]["scores"], abs=1e-6), kind
        # every forward row (losses, generations, gradients) ran on exactly one rank
        assert sum(r[kind]["rows"] for r in results) == single[kind]["rows"], kind
        assert all(0 < r[kind]["rows"] < single[kind]["rows"] for r in results), kind

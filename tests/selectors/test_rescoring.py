"""``rescore_fraction``: later rounds recompute the shortlist and the least recently scored rows.

The rule of docs/rescoring.md is recomputed here independently (a loop over rounds with
the full per-round scores of an independent LESS, masked to the rescored rows) and
compared with the selector's choice; ``scored`` is checked against the forward calls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from dataflex.train.dynamic.sampler import check_dynamic_plan
from dataflex.train.dynamic.schedule import SelectionSchedule
from dataflex.train.dynamic.state import load_selection_state, save_selection_state
from tests.conftest import make_examples, make_tiny_llama
from tests.selectors.gloo_ranks import run_on_ranks
from tests.selectors.less_reference import less_round_scores

SEED = 7


def train_steps(model, opt, examples, steps, offset=0):
    model.train()
    coll = SFTDataCollator(0)
    for s in range(steps):
        start = (2 * (s + offset)) % len(examples)
        batch = coll(examples[start : start + 2] or examples[:2])
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    opt.zero_grad()


def reference_rotation(seed: int, pool: int) -> np.ndarray:
    """The documented tie order of the rotation: place of each index in a seeded shuffle."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, 2**32 - 1])).permutation(pool)
    return np.argsort(perm)


def reference_rescored(last_round, priority, budget, count, rotation):
    """The rule, written out: never scored; the budget best by priority; then the stalest."""
    n = len(last_round)
    never = [i for i in range(n) if last_round[i] < 0]
    if len(never) == n:
        return set(range(n))
    seen = [i for i in range(n) if last_round[i] >= 0]
    best = sorted(seen, key=lambda i: (-priority[i], i))[:budget]
    chosen = set(never) | set(best)
    rest = sorted((i for i in range(n) if i not in chosen), key=lambda i: (last_round[i], rotation[i]))
    chosen |= set(rest[: max(0, count - len(chosen))])
    return chosen


def run_less_rounds(rounds, fraction, budget, *, state_roundtrip_at=None, tmp_path=None):
    """The selector's choices over ``rounds`` rounds, with training steps between them."""
    model = make_tiny_llama(seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.8, 0.95), eps=1e-6)
    pool, val = make_examples(16, seed=31), make_examples(3, seed=32)
    params = {"projector": "identity", "batch_size": 1, "repeat_across_rounds": True, "seed": SEED}
    sel = build_selector("less", rescore_fraction=fraction, **params)
    out = []
    for r in range(1, rounds + 1):
        train_steps(model, opt, pool, 1, offset=r)
        lr = 1e-3 * r
        ctx = SelectionContext(
            model=model,
            optimizer=opt,
            train_dataset=pool,
            eval_dataset=val,
            collator=SFTDataCollator(0),
            learning_rate=lr,
            step=r,
            round=r,
            seed=SEED,
        )
        got = sel.select(ctx, budget)
        full, _ = less_round_scores(model, opt, pool, val)
        out.append((got, full.clone(), lr))
        if state_roundtrip_at == r:
            save_selection_state(tmp_path, {"selector": sel.state_dict()})
            sel = build_selector("less", rescore_fraction=fraction, **params)
            sel.load_state_dict(load_selection_state(tmp_path)["selector"])
    return out


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_less_choice_equals_the_rule_computed_independently(fraction):
    budget, pool = 3, 16
    count = math.floor(fraction * pool)
    results = run_less_rounds(5, fraction, budget)
    rotation = reference_rotation(SEED, pool)
    last_round = [-1] * pool
    last_s = torch.zeros(pool, dtype=torch.float64)
    total = torch.zeros(pool, dtype=torch.float64)
    for r, (got, full, lr) in enumerate(results, start=1):
        rescored = reference_rescored(last_round, total.tolist(), budget, count, rotation)
        assert got.metadata["scored"] == len(rescored) == (pool if r == 1 else count)
        for i in rescored:
            last_s[i] = full[i].item()
            last_round[i] = r
        total += lr * last_s  # a row not rescored carries its last term
        # the choice: the best by S among the rows computed this round (never a stale row)
        order = sorted(rescored, key=lambda i: (-total[i].item(), -last_s[i].item(), i))
        assert got.indices == order[:budget], f"round {r}"
        assert got.scores == pytest.approx([total[i].item() for i in order[:budget]], abs=1e-6)
    # the selector did not simply rescore everything: later rounds differ from exact LESS
    exact_total = sum(lr * full for _, full, lr in results)
    assert not torch.allclose(exact_total, total, atol=1e-6)


def test_fraction_one_is_exact_and_keeps_no_table():
    exact = run_less_rounds(3, 1.0, 3)
    for got, _, _ in exact:
        assert got.metadata["scored"] == 16
    sel = build_selector("less", projector="identity", rescore_fraction=1.0)
    assert "score_table" not in sel.state_dict()
    default = build_selector("less", projector="identity")
    assert default.params.rescore_fraction == 1.0


def test_every_example_is_rescored_within_the_rotation():
    from dataflex.selectors.rescoring import ScoreTable

    pool, budget, fraction = 40, 4, 0.25
    table = ScoreTable(pool, {})
    cands = np.arange(pool)
    count = math.floor(fraction * pool)
    cycle = math.ceil((pool - budget) / (count - budget))
    rng = np.random.default_rng(0)
    for r in range(1, 30):
        pos = table.rescored(cands, budget, fraction, SEED)
        assert len(pos) == (pool if r == 1 else count)
        table.update(cands, pos, torch.zeros(len(pos), 1), r)
        table.rank(cands, torch.from_numpy(rng.random(pool)))
        if r > cycle:
            assert int(table.scored_round.min()) >= r - cycle, r


def test_resume_through_the_checkpoint_state_is_bit_identical(tmp_path):
    straight = run_less_rounds(5, 0.5, 3)
    resumed = run_less_rounds(5, 0.5, 3, state_roundtrip_at=2, tmp_path=tmp_path)
    for (a, _, _), (b, _, _) in zip(straight, resumed):
        assert a.indices == b.indices
        assert a.scores == b.scores
        assert a.metadata["scored"] == b.metadata["scored"]


def test_a_table_for_other_data_is_dropped_and_recomputed(caplog):
    model = make_tiny_llama(seed=3)
    pool, other = make_examples(12, seed=41), make_examples(12, seed=42)
    sel = build_selector("loss", rescore_fraction=0.5, batch_size=4)
    ctx = SelectionContext(
        model=model, optimizer=None, train_dataset=pool, collator=SFTDataCollator(0), round=1
    )
    sel.select(ctx, 2)
    restored = build_selector("loss", rescore_fraction=0.5, batch_size=4)
    restored.load_state_dict(sel.state_dict())
    ctx2 = SelectionContext(
        model=model, optimizer=None, train_dataset=other, collator=SFTDataCollator(0), round=2
    )
    got = restored.select(ctx2, 2)
    # every candidate (the pool less round 1's 2 picks) recomputed: nothing of the other pool's table
    assert got.metadata["scored"] == got.metadata["candidates"] == 10
    assert "computed for other data" in caplog.text


@pytest.mark.parametrize("kind", ["loss", "delta_loss"])
def test_scored_counts_the_rows_through_the_model(kind):
    model = make_tiny_llama(seed=4)
    pool = make_examples(20, seed=51)
    sel = build_selector(kind, rescore_fraction=0.25, batch_size=3, seed=2, repeat_across_rounds=True)
    rows = [0]

    def count(module, args, kwargs):
        rows[0] += kwargs["input_ids"].shape[0]

    model.register_forward_pre_hook(count, with_kwargs=True)
    seen = []
    for r in range(1, 5):
        rows[0] = 0
        ctx = SelectionContext(
            model=model,
            optimizer=None,
            train_dataset=pool,
            collator=SFTDataCollator(0),
            round=r,
            total_rounds=4,
        )
        got = sel.select(ctx, 2)
        seen.append((got.metadata["scored"], rows[0]))
        with torch.no_grad():  # the model moves between rounds
            next(model.parameters()).mul_(0.99)
    assert seen == [(20, 20), (5, 5), (5, 5), (5, 5)]
    assert [sel.examples_scored(20, 2, r) for r in range(0, 5)] == [0, 20, 5, 5, 5]


def example_loss(model, ex) -> float:
    """Mean cross-entropy of one example's completion tokens, one forward of its own."""
    ids = torch.tensor([ex["input_ids"]])
    labels = torch.tensor(ex["labels"][1:])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    keep = labels != -100
    return float(torch.nn.functional.cross_entropy(logits[keep], labels[keep]))


def test_delta_loss_rows_not_rescored_keep_their_last_change():
    model = make_tiny_llama(seed=4)
    model.eval()
    pool = make_examples(20, seed=52)
    sel = build_selector("delta_loss", rescore_fraction=0.25, batch_size=1, seed=2, repeat_across_rounds=True)
    previous: dict[int, float] = {}
    expected = torch.full((20,), math.nan, dtype=torch.float64)
    for r in range(1, 5):
        ctx = SelectionContext(
            model=model,
            optimizer=None,
            train_dataset=pool,
            collator=SFTDataCollator(0),
            round=r,
            total_rounds=4,
        )
        got = sel.select(ctx, 2)
        fresh = torch.nonzero(sel.table.scored_round == r).flatten().tolist()
        assert len(fresh) == got.metadata["scored"] == (20 if r == 1 else 5)
        for i in fresh:
            loss = example_loss(model, pool[i])
            if i in previous:
                expected[i] = previous[i] - loss
            previous[i] = loss
        if r > 1:
            done = torch.isfinite(expected)
            assert torch.allclose(sel.last_delta[done], expected[done], atol=1e-5), r
            # the round ranked every candidate by these Δ (a row without two computations: none)
            ranked = got.metadata["candidate_scores"]
            assert ranked["mean"] == pytest.approx(float(expected[done].mean()), abs=1e-5), r
            assert ranked["min"] == pytest.approx(float(expected[done].min()), abs=1e-5), r
        with torch.no_grad():
            next(model.parameters()).mul_(0.9)


def test_two_processes_return_the_selection_of_one(tmp_path):
    results = run_on_ranks(_rounds, tmp_path)
    single = _rounds(DistributedView())
    for res in results:
        assert res["indices"] == single["indices"]
        for a, b in zip(res["scores"], single["scores"]):
            assert a == pytest.approx(b, abs=1e-6)
        assert res["table_rounds"] == single["table_rounds"]
        assert np.allclose(res["table_rows"], single["table_rows"], atol=1e-6)
        assert res["scored"] == single["scored"] == [12, 6, 6]
    # the rescored rows are split between the ranks: each went through the model once
    assert [a + b for a, b in zip(results[0]["rows"], results[1]["rows"])] == single["rows"]


def _rounds(view: DistributedView) -> dict:
    torch.manual_seed(0)
    model = make_tiny_llama(seed=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pool, val = make_examples(12, seed=21), make_examples(3, seed=22)
    sel = build_selector(
        "less", projector="identity", batch_size=2, rescore_fraction=0.5, seed=3, repeat_across_rounds=True
    )
    rows = [0]

    def count(module, args, kwargs):
        rows[0] += kwargs["input_ids"].shape[0]

    out: dict = {"indices": [], "scores": [], "scored": [], "rows": []}
    for r in range(1, 4):
        train_steps(model, opt, pool, 1, offset=r)
        handle = model.register_forward_pre_hook(count, with_kwargs=True)
        rows[0] = 0
        ctx = SelectionContext(
            model=model,
            optimizer=opt,
            train_dataset=pool,
            eval_dataset=val,
            collator=SFTDataCollator(0),
            learning_rate=1e-3,
            step=r,
            round=r,
            dist=view,
            seed=13,
        )
        got = sel.select(ctx, 2)
        handle.remove()
        out["indices"].append(got.indices)
        out["scores"].append(got.scores)
        out["scored"].append(got.metadata["scored"])
        out["rows"].append(rows[0])
    # the score table every rank keeps: which rows each round computed, and their values
    out["table_rounds"] = sel.table.scored_round.tolist()
    out["table_rows"] = sel.table.rows.tolist()
    return out


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_out_of_range_fraction_names_the_value_and_range(value):
    with pytest.raises(ConfigError) as err:
        build_selector("less", rescore_fraction=value)
    msg = str(err.value)
    assert "rescore_fraction" in msg and str(value) in msg


def test_a_fraction_that_rescores_only_the_shortlist_is_refused_before_the_model_loads():
    sel = build_selector("less", rescore_fraction=0.03)
    schedule = SelectionSchedule(warmup_step=5, update_step=5, update_times=4)
    with pytest.raises(ConfigError) as err:
        check_dynamic_plan(schedule, sel, pool_size=1000, examples_per_step=8, has_eval_dataset=True)
    msg = str(err.value)
    assert "rescore_fraction: 0.03" in msg and "30 of a round's 1000" in msg and "[0.041, 1]" in msg
    ok = build_selector("less", rescore_fraction=0.041)
    check_dynamic_plan(schedule, ok, pool_size=1000, examples_per_step=8, has_eval_dataset=True)


def test_near_with_an_embedding_file_refuses_a_fraction(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "emb.safetensors"
    save_file({"train": torch.zeros(10, 4), "eval": torch.zeros(2, 4)}, str(path))
    sel = build_selector("near", embedding_file=str(path), rescore_fraction=0.5)
    with pytest.raises(ConfigError, match="with embedding_file none are computed"):
        sel.check_budget(10, 2)


def test_resume_with_another_fraction_is_refused_naming_it():
    from transformers import TrainingArguments

    from dataflex.train.dynamic.resume import check_same_run, run_fingerprint

    pool = make_examples(8, seed=1)
    args = TrainingArguments(output_dir="unused", report_to=[])
    saved = run_fingerprint(build_selector("less", rescore_fraction=0.2), pool, None, args)
    this_run = run_fingerprint(build_selector("less", rescore_fraction=0.5), pool, None, args)
    with pytest.raises(ConfigError, match=r"selector_params.rescore_fraction=0.2, this run has .*=0.5"):
        check_same_run(saved, this_run, "out/checkpoint-10")
    check_same_run(saved, saved, "out/checkpoint-10")


def test_each_report_record_has_scored():
    from dataflex.selectors.base import Selection
    from dataflex.train.dynamic.reports import round_record

    pool = make_examples(6, seed=1)
    sel = build_selector("loss", rescore_fraction=0.5, repeat_across_rounds=True, batch_size=2)
    ctx = SelectionContext(
        model=make_tiny_llama(seed=1),
        optimizer=None,
        train_dataset=pool,
        collator=SFTDataCollator(0),
        round=1,
    )
    got = sel.select(ctx, 2)
    record = round_record(
        round_=1, step=5, learning_rate=0.1, selection=got, seconds=1.0, candidates=6, train_dataset=pool
    )
    assert record["scored"] == 6
    warmup = Selection(indices=[0, 1], metadata={"selector": "warmup"})
    record = round_record(
        round_=0, step=0, learning_rate=None, selection=warmup, seconds=0.0, candidates=6, train_dataset=pool
    )
    assert record["scored"] == 0

"""``near``: its choice equals a slow nearest-neighbour merge; the embedding file is checked early."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from dataflex.errors import ConfigError
from dataflex.registry import SELECTORS, build_selector
from tests.selectors.embedding_reference import cosine, slow_embeddings


def slow_near(train_emb, val_emb, candidates, n):
    """Smallest k whose union of per-query top-k lists reaches n; the last level cut by similarity."""
    sims = [[cosine(v, train_emb[c]) for c in range(len(candidates))] for v in val_emb]
    ranked = [sorted(range(len(candidates)), key=lambda c, s=s: (-s[c], c)) for s in sims]
    chosen: list[int] = []
    for k in range(1, len(candidates) + 1):
        level = sorted((-sims[q][ranked[q][k - 1]], q, ranked[q][k - 1]) for q in range(len(sims)))
        for _, _, c in level:
            if c not in chosen:
                chosen.append(c)
            if len(chosen) == n:
                return [candidates[c] for c in chosen]
    raise AssertionError("pool too small")


@pytest.fixture
def setup(tiny_llama, examples):
    return tiny_llama(seed=6), examples(12, seed=31), examples(3, seed=32)


@pytest.mark.parametrize("n", [1, 4, 7, 12])
def test_choice_equals_slow_merge(setup, ctx_factory, n):
    model, pool, val = setup
    sel = build_selector("near", batch_size=5).select(ctx_factory(model, pool, val, round=1), n)
    ref = slow_near(slow_embeddings(model, pool), slow_embeddings(model, val), list(range(12)), n)
    assert sel.indices == ref


def test_later_rounds_skip_earlier_picks_and_resume(setup, ctx_factory):
    model, pool, val = setup
    first = build_selector("near", batch_size=6)
    r1 = first.select(ctx_factory(model, pool, val, round=1), 4)
    saved = first.state_dict()
    r2 = first.select(ctx_factory(model, pool, val, round=2), 4)
    assert not set(r1.indices) & set(r2.indices)
    resumed = build_selector("near", batch_size=6)
    resumed.load_state_dict(json.loads(json.dumps(saved)))  # checkpoints store it as JSON
    assert resumed.select(ctx_factory(model, pool, val, round=2), 4).indices == r2.indices
    rest = [i for i in range(12) if i not in r1.indices]
    emb = slow_embeddings(model, pool)
    assert r2.indices == slow_near(emb[rest], slow_embeddings(model, val), rest, 4)


def test_needs_an_eval_dataset(setup, ctx_factory):
    model, pool, _ = setup
    assert SELECTORS.get("near").requires_eval_dataset
    with pytest.raises(ConfigError, match="eval_dataset"):
        build_selector("near").select(ctx_factory(model, pool, None), 2)


def _write(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def test_embedding_file_gives_the_file_neighbours(tmp_path, examples, ctx_factory):
    pool, val = examples(6, seed=1), examples(2, seed=2)
    gen = torch.Generator().manual_seed(0)
    train, ev = torch.randn(4, 5, generator=gen), torch.randn(2, 5, generator=gen)
    rows = [5, 0, 3, 2]
    path = _write(tmp_path / "e.safetensors", train=train, eval=ev, train_indices=torch.tensor(rows))
    sel = build_selector("near", embedding_file=path)
    sel.check_budget(6, 3)
    got = sel.select(ctx_factory(None, pool, val, collator=None, round=1), 3)
    assert got.indices == slow_near(train.double(), ev.double(), rows, 3)
    assert got.metadata["source"] == "file"


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"train": torch.zeros(3, 4, dtype=torch.int64), "eval": torch.zeros(2, 4)}, "float dtype"),
        ({"train": torch.zeros(3), "eval": torch.zeros(2, 4)}, r"shape \(3,\)"),
        ({"train": torch.zeros(3, 4), "eval": torch.zeros(2, 5)}, "dimension 4"),
        ({"train": torch.zeros(3, 4)}, "missing"),
        ({"train": torch.full((3, 4), float("nan")), "eval": torch.zeros(2, 4)}, "NaN"),
        (
            {"train": torch.zeros(2, 4), "eval": torch.zeros(2, 4), "train_indices": torch.tensor([1, 1])},
            "distinct",
        ),
    ],
)
def test_bad_embedding_files_fail_when_the_config_is_read(tmp_path, tensors, match):
    path = _write(tmp_path / "bad.safetensors", **tensors)
    with pytest.raises(ConfigError, match=match):
        SELECTORS.get("near").from_params({"embedding_file": path})


def test_file_not_fitting_the_pool_fails_before_the_model(tmp_path):
    path = _write(tmp_path / "e.safetensors", train=torch.zeros(5, 3), eval=torch.zeros(2, 3))
    sel = build_selector("near", embedding_file=path)
    with pytest.raises(ConfigError, match="5 rows but the pool has 8"):
        sel.check_budget(8, 2)
    path = _write(
        tmp_path / "i.safetensors",
        train=torch.zeros(2, 3),
        eval=torch.zeros(2, 3),
        train_indices=torch.tensor([0, 9]),
    )
    with pytest.raises(ConfigError, match="out of range"):
        build_selector("near", embedding_file=path).check_budget(8, 2)


def test_near_ties_go_to_the_lower_pool_index(tmp_path, examples, ctx_factory):
    """Two embeddings of one example from different batches differ by ~1e-7: not an order."""
    pool, val = examples(5, seed=1), examples(1, seed=2)
    train = torch.tensor([[0.0, 1.0], [1.0, 2e-3], [0.5, 0.5], [-1.0, 0.0], [1.0, 2e-3 - 1e-8]])
    path = _write(tmp_path / "e.safetensors", train=train.double(), eval=torch.tensor([[1.0, 0.0]]).double())
    got = build_selector("near", embedding_file=path).select(ctx_factory(None, pool, val, collator=None), 2)
    assert got.indices == [1, 4]  # row 4 is 2e-11 closer in cosine (0.999998): a tie at 1e-6

"""The paraphrase setting's generator keeps its promises (benchmarks/paraphrase_mix.py)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from benchmarks.less_variants import VARIANTS
from benchmarks.paraphrase_mix import (
    FAMILIES,
    NEAR_MISS,
    PHRASINGS,
    POOL_COUNTS,
    TARGET,
    make_splits,
)
from benchmarks.quality_arms import components_text


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=0)


def test_same_seed_same_rows_other_seed_other_rows(splits):
    assert make_splits(seed=0) == splits
    assert make_splits(seed=1)["pool"] != splits["pool"]


def test_six_to_eight_alpaca_families_each_with_several_pool_phrasings(splits):
    pool = splits["pool"]
    assert 6 <= len(FAMILIES) <= 8
    assert Counter(r["task"] for r in pool) == Counter(POOL_COUNTS)
    for row in pool:
        assert set(row) == {"instruction", "input", "output", "task", "phrasing"}
    for family in FAMILIES:
        used = {r["instruction"] for r in pool if r["task"] == family}
        used_templates = {r["phrasing"] for r in pool if r["task"] == family}
        assert len(used_templates) == len(PHRASINGS[family]["pool"]) >= 3, family
        assert len(used) >= 3


def test_target_is_at_most_ten_percent_of_the_pool(splits):
    pool = splits["pool"]
    share = sum(r["task"] == TARGET for r in pool) / len(pool)
    assert 0.05 < share <= 0.10


def test_validation_and_test_phrasings_never_occur_in_the_pool(splits):
    pool_instructions = {r["instruction"] for r in splits["pool"]}
    valid = {r["instruction"] for r in splits["valid"]}
    test = {r["instruction"] for r in splits["test"]}
    assert len(valid) >= 3 and len(test) >= 3
    assert not valid & pool_instructions
    assert not test & pool_instructions
    assert not valid & test
    assert all(r["task"] == TARGET for r in splits["valid"] + splits["test"])
    # nor do their inputs: a held-out row cannot be answered by remembering a pool row
    pool_inputs = {r["input"] for r in splits["pool"] if r["task"] == TARGET}
    assert not pool_inputs & {r["input"] for r in splits["valid"] + splits["test"]}


def _word_sets(rows):
    return [r["input"].split() for r in rows]


def test_near_miss_shares_the_targets_input_format_and_wording_not_its_answer(splits):
    pool = splits["pool"]
    target = [r for r in pool if r["task"] == TARGET]
    near = [r for r in pool if r["task"] == NEAR_MISS]
    vocab = {w for ws in _word_sets(target) for w in ws}
    fmt = re.compile(r"^[a-z]+( [a-z]+){1,3}$")  # 2-4 lower-case words
    for rows in (target, near):
        assert all(fmt.match(r["input"]) for r in rows)
    assert {w for ws in _word_sets(near) for w in ws} <= vocab | {w for ws in _word_sets(near) for w in ws}
    assert len({w for ws in _word_sets(near) for w in ws} & vocab) >= 20
    # wording: most of the near miss's pool phrasings share their first three words with a target one
    heads = {" ".join(p.split()[:3]) for p in PHRASINGS[TARGET]["pool"]}
    shared = [p for p in PHRASINGS[NEAR_MISS]["pool"] if " ".join(p.split()[:3]) in heads]
    assert len(shared) >= 2
    # a different answer: never the target's
    for r in near:
        assert r["output"] != r["input"].upper()
        assert r["output"].split() == r["input"].split()[::-1]
    for r in target:
        assert r["output"] == r["input"].upper()


def test_every_variant_is_a_less_component_with_valid_params():
    import yaml

    from dataflex.selectors.less import LessSelector

    selectors = yaml.safe_load(components_text())["selectors"]
    for name, variant in VARIANTS.items():
        entry = selectors[name]
        assert entry["name"] == "less"
        params = LessSelector.Params(**entry["params"])
        for key, value in variant.params.items():
            assert getattr(params, key) == value

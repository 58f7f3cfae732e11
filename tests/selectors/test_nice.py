"""``nice`` against slow computations: an uncached sampler, per-sample autograd, LESS by hand."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.nice_metrics import METRICS, exact_match, lcs_length, register_metric, rouge_l
from dataflex.selectors.nice_policy import sample_generations, sample_rng, split_example
from tests.selectors.less_reference import adam_direction, flat_grad

REPO = Path(__file__).resolve().parents[2]
EOS = 2


@pytest.fixture(scope="module", autouse=True)
def even_share_metric():
    """A graded test metric: the share of even generated tokens (so rewards differ)."""

    @register_metric("test_even_share")
    def even_share(prediction, reference, example):
        return sum(t % 2 == 0 for t in prediction) / max(1, len(prediction))

    yield
    METRICS.unregister("test_even_share")


# -- metrics ----------------------------------------------------------------------------------
def brute_lcs(a, b):
    for k in range(min(len(a), len(b)), 0, -1):
        subs = set(itertools.combinations(b, k))
        if any(c in subs for c in itertools.combinations(a, k)):
            return k
    return 0


def test_lcs_and_rouge_l_against_brute_force():
    rng = random.Random(0)
    for _ in range(60):
        a = [rng.randrange(4) for _ in range(rng.randint(0, 7))]
        b = [rng.randrange(4) for _ in range(rng.randint(0, 7))]
        assert lcs_length(a, b) == brute_lcs(a, b)
    # LCS([1,2,3,4], [1,3,5]) = 2: P = 1/2, R = 2/3, F = 4/7
    assert rouge_l([1, 2, 3, 4], [1, 3, 5], {}) == pytest.approx(4 / 7)
    assert rouge_l([], [1], {}) == 0.0 and rouge_l([7], [7], {}) == 1.0
    assert exact_match([1, 2], [1, 2], {}) == 1.0 and exact_match([1, 2], [1, 2, 3], {}) == 0.0


# -- generation -------------------------------------------------------------------------------
def slow_sample(model, prompt, m, new, temperature, generator):
    """Ancestral sampling without a KV cache: the full sequence through the model every token."""
    seqs = [list(prompt) for _ in range(m)]
    done = [False] * m
    with torch.no_grad():
        for _ in range(new):
            logits = model(input_ids=torch.tensor(seqs)).logits[:, -1]
            probs = torch.softmax(logits.double() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).tolist()
            for i, t in enumerate(nxt):
                seqs[i].append(t if not done[i] else 0)  # padding after EOS, dropped below
                done[i] = done[i] or t == EOS
            if all(done):
                break
    out = []
    for s in seqs:
        gen = s[len(prompt) :]
        out.append(gen[: gen.index(EOS) + 1] if EOS in gen else gen)
    return out


def test_kv_cached_sampling_equals_full_recompute(tiny_llama, examples):
    model = tiny_llama(seed=5).eval()
    prompt, _ = split_example(examples(1, seed=40)[0], 0)
    got = sample_generations(
        model,
        prompt,
        num_samples=3,
        max_new_tokens=6,
        temperature=1.0,
        eos={EOS},
        generator=sample_rng(1, 2, 0),
    )
    assert got == slow_sample(model, prompt, 3, 6, 1.0, sample_rng(1, 2, 0))
    again = sample_generations(
        model,
        prompt,
        num_samples=3,
        max_new_tokens=6,
        temperature=1.0,
        eos={EOS},
        generator=sample_rng(1, 2, 0),
    )
    assert again == got
    other = sample_generations(
        model,
        prompt,
        num_samples=3,
        max_new_tokens=6,
        temperature=1.0,
        eos={EOS},
        generator=sample_rng(1, 3, 0),
    )
    assert other != got  # another round draws other samples


# -- policy gradient and the selection ----------------------------------------------------------
def logprob_grad(model, prompt, gen):
    """∇ log p(gen | prompt) of one sample, by direct autograd on log-softmax."""
    params = [p for p in model.parameters() if p.requires_grad]
    ids = torch.tensor([list(prompt) + list(gen)])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    logp = logp[torch.arange(len(targets)), targets][len(prompt) - 1 :].sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(logp, params)]).double()


def slow_nice_direction(model, val, seed, round_, m, new, temperature, baseline):
    """v = −(1/M) Σ (r − b) ∇ log p(y | x′) per validation example, and all rewards."""
    vs, rewards = [], []
    for i, ex in enumerate(val):
        prompt, _ = split_example(ex, i)
        gens = slow_sample(model, prompt, m, new, temperature, sample_rng(seed, round_, i))
        r = [sum(t % 2 == 0 for t in g if t != EOS) / max(1, len([t for t in g if t != EOS])) for g in gens]
        b = float(np.mean(r)) if baseline == "mean" else 0.0
        v = sum(-(ri - b) * logprob_grad(model, prompt, g) for ri, g in zip(r, gens)) / m
        vs.append(v)
        rewards.extend(r)
    return vs, rewards


@pytest.fixture
def warm(tiny_llama, examples):
    model = tiny_llama(seed=6, vocab_size=32, hidden_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.85, 0.95), eps=1e-7)
    pool, val = examples(8, vocab_size=32, seed=41), examples(3, vocab_size=32, seed=42)
    from dataflex.data.collator import SFTDataCollator

    model(**SFTDataCollator(0)(pool[:4])).loss.backward()
    opt.step()
    opt.zero_grad()
    return model, opt, pool, val


NICE = {"projector": "identity", "metric": "test_even_share", "mc_samples": 3, "max_new_tokens": 4}


@pytest.mark.parametrize("baseline", ["none", "mean"])
def test_policy_gradient_and_scores_equal_slow_computation(warm, ctx_factory, baseline):
    model, opt, pool, val = warm
    sel = build_selector(
        "nice", **NICE, temperature=1.0, baseline=baseline, score_accumulation="current", seed=4
    )
    ctx = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=2, step=1)
    vs, rewards = slow_nice_direction(model, val, 4, 2, 3, 4, 1.0, baseline)

    feats = sel.validation_features(ctx, _rows(sel, ctx))
    for i, v in enumerate(vs):
        assert feats.rows[i].double() == pytest.approx(v, abs=1e-6), f"validation row {i}"
    assert feats.facts["rewards"] == pytest.approx(rewards)
    assert any(v.abs().sum() > 0 for v in vs)

    got = sel.select(ctx, len(pool))
    expected = []
    for ex in pool:
        gamma = adam_direction(model, opt, flat_grad(model, ex))
        cos = [
            float(torch.nn.functional.cosine_similarity(gamma, v, dim=0)) if v.abs().sum() > 0 else 0.0
            for v in vs
        ]
        expected.append(sum(cos) / len(cos))
    scores = dict(zip(got.indices, got.scores))
    for i in range(len(pool)):
        assert scores[i] == pytest.approx(expected[i], abs=1e-5)
    assert got.indices == torch.argsort(torch.tensor(expected), descending=True, stable=True).tolist()
    assert got.metadata["transform"] == "adam" and got.metadata["reward_mean"] == pytest.approx(
        np.mean(rewards)
    )


def _rows(sel, ctx):
    """The feature function LESS hands to validation_features, built the same way."""
    from dataflex.selectors.less_features import FeatureRequest, compute_rows

    projector = sel.projector_for(ctx)

    def rows(dataset, indices, kind, state, role):
        req = FeatureRequest(
            dataset=dataset, indices=indices, transform=kind, adam_state=state, role=role, identity={}
        )
        return compute_rows(ctx.model, req, projector, ctx, batch_size=4, dtype="float32", cache_dir=None)

    return rows


def test_resume_and_cache(warm, ctx_factory, tmp_path):
    model, opt, pool, val = warm
    kw = {**NICE, "cache_dir": str(tmp_path), "batch_size": 4}
    a = build_selector("nice", **kw)
    a.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=2e-3, round=1, step=1), 2)
    saved = json.loads(json.dumps(a.state_dict()))
    b = build_selector("nice", **kw)
    b.load_state_dict(saved)
    ctx2 = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=2, step=2)
    expected = a.select(ctx2, 3)
    resumed = b.select(ctx2, 3)
    assert resumed.indices == expected.indices and resumed.scores == pytest.approx(expected.scores)
    assert resumed.metadata["cache_hit"] and not expected.metadata["cache_hit"]
    assert not set(resumed.indices) & set(saved["chosen"])  # repeat_across_rounds: false
    other = build_selector("nice", **{**kw, "metric": "exact_match"})
    assert not other.select(ctx2, 3).metadata["cache_hit"]  # the metric is part of the key


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_metric_is_a_config_error_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown metric 'rouge_1'.*Did you mean 'rouge_l'"):
        build_selector("nice", metric="rouge_1")


def test_training_config_errors_before_the_model_loads(tmp_path, monkeypatch):
    from dataflex.train.config import load_train_config

    monkeypatch.chdir(REPO)
    comps = tmp_path / "components.yaml"
    comps.write_text("selectors:\n  nice:\n    name: nice\n    params: {metric: bleu}\n")
    config = REPO / "examples" / "quickstart" / "less.yaml"
    with pytest.raises(ConfigError, match=r"selectors\.nice\.params\.metric: .*unknown metric 'bleu'"):
        load_train_config(config, [f"components_cfg_file={comps}", "component_name=nice"])
    comps.write_text("selectors:\n  nice:\n    name: nice\n    params: {}\n")
    with pytest.raises(ConfigError, match=r"eval_dataset: the nice selector \('nice'\) scores"):
        load_train_config(
            config,
            [f"components_cfg_file={comps}", "component_name=nice", "eval_dataset=null", "eval_strategy=no"],
        )
    with pytest.raises(ConfigError, match="nice scores candidates against a validation set"):
        build_selector("nice").select(_ctx_without_eval(), 1)


def _ctx_without_eval():
    from dataflex.data.collator import SFTDataCollator
    from dataflex.selectors.base import SelectionContext

    pool = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}] * 2
    return SelectionContext(
        model=torch.nn.Linear(1, 1), optimizer=None, train_dataset=pool, collator=SFTDataCollator(0)
    )

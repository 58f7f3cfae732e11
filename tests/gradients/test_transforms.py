"""Adam/sign transforms against the formula written out by hand; missing-state handling."""

from __future__ import annotations

import logging

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.gradients import AdamState, per_example_features
from tests.adam_reference import adam_direction


def _trained(model, examples, betas=(0.8, 0.9), eps=1e-3, steps=2):
    """An AdamW that has stepped on ``model`` (then grads cleared, as after a training step)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, betas=betas, eps=eps)
    collate = SFTDataCollator(0)
    for s in range(steps):
        opt.zero_grad()
        model(**collate(examples(4, seed=10 + s))).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_adam_matches_formula_by_hand(llama, examples, kind):
    model = llama(kind)
    opt = _trained(model, examples)
    batch = SFTDataCollator(0)(examples(3, seed=20))
    g = per_example_features(model, batch, transform="sgd")
    got = per_example_features(model, batch, transform="adam", optimizer=opt)
    m = torch.cat([opt.state[p]["exp_avg"].flatten() for p in model.parameters() if p.requires_grad])
    v = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in model.parameters() if p.requires_grad])
    b1, b2, eps = 0.8, 0.9, 1e-3
    want = adam_direction(g, m, v, b1, b2, eps)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The same moments through an AdamState give the same features.
    state = AdamState.from_optimizer(model, opt)
    again = per_example_features(model, batch, transform="adam", adam_state=state)
    torch.testing.assert_close(again, got, atol=0, rtol=0)


def test_state_is_read_for_the_trainable_parameters_only(llama, examples):
    """One reader of the optimizer's state (engines.full_adam_state) on every engine: a
    parameter frozen after it stepped keeps its moments in the optimizer, not in the AdamState."""
    model = llama("full")
    opt = _trained(model, examples)
    frozen = next(n for n, p in model.named_parameters() if p.requires_grad)
    model.get_parameter(frozen).requires_grad_(False)
    state = AdamState.from_optimizer(model, opt)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(state.moments) == sorted(trainable) and frozen not in state


def test_adam_against_batch1_loop(llama, examples, slow):
    model = llama("lora")
    opt = _trained(model, examples)
    state = AdamState.from_optimizer(model, opt)
    exs = examples(3, seed=21)
    got = per_example_features(model, SFTDataCollator(0, "left")(exs), transform="adam", optimizer=opt)
    moments = {n: (m.exp_avg, m.exp_avg_sq, m.beta1, m.beta2, m.eps) for n, m in state.moments.items()}
    torch.testing.assert_close(got, slow(model, exs, transform="adam", moments=moments), atol=1e-4, rtol=1e-4)


def test_sign_is_sign_of_gradient(llama, examples):
    model = llama("lora")
    batch = SFTDataCollator(0)(examples(3))
    g = per_example_features(model, batch)
    assert torch.equal(per_example_features(model, batch, transform="sign"), torch.sign(g))


def test_missing_adam_state_is_an_error_or_a_logged_fallback(llama, examples, caplog):
    model = llama("lora")
    batch = SFTDataCollator(0)(examples(2))
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ConfigError, match=r"transform='adam' needs Adam moments.*has not stepped yet"):
        per_example_features(model, batch, transform="adam", optimizer=fresh)
    with pytest.raises(ConfigError, match=r"no optimizer= or adam_state= was given.*allow_sgd_fallback=True"):
        per_example_features(model, batch, transform="adam")
    with caplog.at_level(logging.WARNING):
        got = per_example_features(model, batch, transform="adam", optimizer=fresh, allow_sgd_fallback=True)
    assert "transform='adam' falls back to 'sgd'" in caplog.text
    assert torch.equal(got, per_example_features(model, batch))


def test_adam_argument_errors(llama, examples):
    model = llama("lora")
    batch = SFTDataCollator(0)(examples(2))
    opt = _trained(model, examples, steps=1)
    with pytest.raises(ConfigError, match="either optimizer= or adam_state="):
        per_example_features(
            model, batch, transform="adam", optimizer=opt, adam_state=AdamState.from_optimizer(model, opt)
        )
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"needs an Adam-like optimizer.*has no 'betas'"):
        per_example_features(model, batch, transform="adam", optimizer=sgd)


def test_each_param_group_uses_its_own_betas_and_eps(llama, examples):
    """Two groups with different (β₁, β₂, ε): every parameter's feature uses its group's values."""
    model = llama("lora")
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": trainable[::2], "betas": (0.5, 0.6), "eps": 1e-2},
        {"params": trainable[1::2], "betas": (0.9, 0.99), "eps": 1e-6},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-2)
    collate = SFTDataCollator(0)
    for s in range(2):
        opt.zero_grad()
        model(**collate(examples(4, seed=30 + s))).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    batch = collate(examples(3, seed=40))
    g = per_example_features(model, batch, transform="sgd")
    got = per_example_features(model, batch, transform="adam", optimizer=opt)
    hyper = {id(p): (gr["betas"][0], gr["betas"][1], gr["eps"]) for gr in groups for p in gr["params"]}
    parts, offset = [], 0
    for p in trainable:  # features run over the trainable parameters in model order
        b1, b2, eps = hyper[id(p)]
        gp = g[:, offset : offset + p.numel()]
        parts.append(adam_direction(gp, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"], b1, b2, eps))
        offset += p.numel()
    torch.testing.assert_close(got, torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)

"""A feature pass leaves training state exactly as it found it."""

from __future__ import annotations

import copy

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.gradients import per_example_features


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_no_grad_writes_no_optimizer_change_modes_restored(llama, examples, kind):
    model = llama(kind)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    collate = SFTDataCollator(0)
    model(**collate(examples(4, seed=30))).loss.backward()
    opt.step()
    # A half-accumulated gradient, as in the middle of gradient accumulation.
    opt.zero_grad(set_to_none=True)
    model(**collate(examples(2, seed=31))).loss.backward()
    grads_before = {id(p): (p.grad, p.grad.clone()) for p in trainable}
    opt_before = copy.deepcopy(opt.state_dict())
    params_before = [p.detach().clone() for p in model.parameters()]
    fired = []
    handles = [p.register_post_accumulate_grad_hook(lambda p: fired.append(p)) for p in trainable]
    model.train()
    some = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
    some.eval()  # mixed modes must come back exactly
    modes = {n: m.training for n, m in model.named_modules()}

    per_example_features(model, collate(examples(3, seed=32)), transform="adam", optimizer=opt)

    assert fired == []  # no AccumulateGrad ran: DDP/ZeRO hooks live there
    for p in trainable:
        same_obj, values = grads_before[id(p)]
        assert p.grad is same_obj
        assert torch.equal(p.grad, values)
    after = opt.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    for i, st in opt_before["state"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(after["state"][i][key]), torch.as_tensor(value))
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters()))
    assert {n: m.training for n, m in model.named_modules()} == modes
    for h in handles:
        h.remove()


def test_mode_restored_after_an_error(llama, examples):
    model = llama("lora")
    model.train()
    batch = SFTDataCollator(0)(examples(2))
    batch["input_ids"] = batch["input_ids"] + 1000  # out of vocabulary: the forward fails
    with pytest.raises(IndexError):
        per_example_features(model, batch)
    assert all(m.training for m in model.modules())

"""AdamState.from_checkpoint maps a real HF Trainer's optimizer.pt exactly (both parameter groups)."""

from __future__ import annotations

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.gradients import AdamState, per_example_features


@pytest.fixture
def trained(llama, examples, tmp_path):
    """A full fine-tune (biases on) trained 2 steps by transformers.Trainer, checkpoint saved."""
    from transformers import Trainer, TrainingArguments

    model = llama("full")
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        save_steps=2,
        save_strategy="steps",
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.1,
        adam_beta1=0.8,
        adam_beta2=0.95,
        adam_epsilon=1e-4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_only_model=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=examples(8, seed=40), data_collator=SFTDataCollator(0)
    )
    trainer.train()
    return trainer, tmp_path / "run" / "checkpoint-2"


def test_checkpoint_mapping_matches_live_optimizer(trained, examples):
    trainer, ckpt = trained
    model = trainer.model
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2
    assert groups[0]["params"]  # decay group
    assert groups[1]["params"]  # no-decay group (norm weights, biases)
    live = AdamState.from_optimizer(model, trainer.optimizer)
    loaded = AdamState.from_checkpoint(model, ckpt)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(live) == len(loaded) == len(names)
    for n in names:
        a, b = live[n], loaded[n]
        assert torch.equal(a.exp_avg, b.exp_avg), n
        assert torch.equal(a.exp_avg_sq, b.exp_avg_sq), n
        assert (b.beta1, b.beta2, b.eps) == (0.8, 0.95, 1e-4)
    # The mapping is not the identity: reading optimizer.pt in named_parameters order would be wrong.
    sd = torch.load(ckpt / "optimizer.pt", weights_only=True)
    naive = {n: sd["state"][i]["exp_avg"] for i, n in enumerate(names)}
    assert any(
        naive[n].shape != live[n].exp_avg.shape or not torch.equal(naive[n], live[n].exp_avg) for n in names
    )
    batch = SFTDataCollator(0)(examples(2, seed=41))
    torch.testing.assert_close(
        per_example_features(model, batch, transform="adam", adam_state=loaded),
        per_example_features(model, batch, transform="adam", optimizer=trainer.optimizer),
        atol=0,
        rtol=0,
    )


def test_checkpoint_for_another_model_is_refused(llama, tmp_path):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    full = llama("full")
    opt = torch.optim.AdamW([{"params": list(full.parameters())}])  # one group, not the Trainer's two
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")
    with pytest.raises(ConfigError, match=r"parameter groups of sizes .* do not match the HF Trainer layout"):
        AdamState.from_checkpoint(llama("lora"), ckpt)
    with pytest.raises(FileNotFoundError, match=r"No optimizer\.pt in"):
        AdamState.from_checkpoint(llama("lora"), tmp_path)

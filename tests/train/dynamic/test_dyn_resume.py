"""Kill after a selection round, resume from the checkpoint: same selections, same weights."""

from __future__ import annotations

import pytest
import torch
from dyn_helpers import IndexCollator, make_pool, tiny_llama, training_args
from peft import LoraConfig, get_peft_model
from transformers import TrainerCallback

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.train.dynamic import (
    DynamicSelectTrainer,
    SelectionSchedule,
    load_selection_state,
    read_selections,
)

SCHEDULE = SelectionSchedule(warmup_step=2, update_step=2, update_times=2)


class StopAt(TrainerCallback):
    """Stops training after ``step`` optimizer steps, saving a checkpoint there."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def lora_model():
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return get_peft_model(tiny_llama(seed=1), config)


def make_trainer(output_dir, callbacks=(), schedule=SCHEDULE, **args):
    return DynamicSelectTrainer(
        model=lora_model(),
        args=training_args(output_dir, save_strategy="steps", save_steps=100, **args),
        train_dataset=make_pool(24),
        data_collator=IndexCollator(),
        selector=build_selector("test_cumloss"),
        schedule=schedule,
        callbacks=list(callbacks),
        plots=False,
    )


def adapter_weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def strip_times(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    trainer = make_trainer(out)
    trainer.train()
    return trainer, out


@pytest.mark.parametrize("stop", [2, 3], ids=["right-after-round-1", "mid-round-1"])
def test_resume_continues_with_the_same_selections_and_trajectory(tmp_path, uninterrupted, stop):
    full, full_out = uninterrupted
    first = make_trainer(tmp_path, callbacks=[StopAt(stop)])
    first.train()
    assert first.state.global_step == stop
    checkpoint = tmp_path / f"checkpoint-{stop}"
    saved = load_selection_state(checkpoint)
    assert sorted(int(r) for r in saved["sampler"]["rounds"]) == [0, 1]
    assert isinstance(saved["sampler"]["selector"]["cumulative"], torch.Tensor)
    # each selection is saved once, in the sampler's state; the report records are rebuilt from it
    copies = [k for r in saved["report"] for k in ("indices", "scores", "metadata") if k in r]
    assert saved["report"] and not copies

    resumed = make_trainer(tmp_path)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == SCHEDULE.total_steps

    assert {r: s.indices for r, s in resumed.selections.items()} == {
        r: s.indices for r, s in full.selections.items()
    }
    assert torch.equal(resumed.selector.cumulative, full.selector.cumulative)
    a, b = adapter_weights(resumed), adapter_weights(full)
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name
    report = read_selections(tmp_path / "dataflex" / "selections.jsonl")
    assert [r["round"] for r in report] == [0, 1, 2]
    assert strip_times(report) == strip_times(read_selections(full_out / "dataflex" / "selections.jsonl"))


def test_resume_from_true_picks_the_last_checkpoint(tmp_path, uninterrupted):
    full, _ = uninterrupted
    make_trainer(tmp_path, callbacks=[StopAt(4)]).train()
    resumed = make_trainer(tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert {r: s.indices for r, s in resumed.selections.items()} == {
        r: s.indices for r, s in full.selections.items()
    }


def test_resume_with_another_schedule_or_without_state_is_refused(tmp_path):
    make_trainer(tmp_path, callbacks=[StopAt(2)]).train()
    checkpoint = tmp_path / "checkpoint-2"
    other = make_trainer(tmp_path, schedule=SelectionSchedule(2, 2, 3))
    with pytest.raises(ConfigError, match="it was written with schedule="):
        other.train(resume_from_checkpoint=str(checkpoint))
    (checkpoint / "dataflex_selection.json").unlink()
    with pytest.raises(ConfigError, match="has no dataflex_selection.json"):
        make_trainer(tmp_path).train(resume_from_checkpoint=str(checkpoint))
    assert not [p for p in checkpoint.iterdir() if p.name.endswith(".tmp")]


def less_trainer(output_dir, callbacks=()):
    """LESS (exact features, cumulative scores) on the tiny model, scored against a held-out set."""
    return DynamicSelectTrainer(
        model=lora_model(),
        args=training_args(output_dir, save_strategy="steps", save_steps=100),
        train_dataset=make_pool(24),
        data_collator=SFTDataCollator(pad_token_id=0),
        selector=build_selector("less", projector="identity", batch_size=8, seed=3),
        schedule=SCHEDULE,
        selection_eval_dataset=make_pool(4, seed=9),
        callbacks=list(callbacks),
        plots=False,
    )


def test_less_resumes_through_a_real_checkpoint(tmp_path):
    """Round 2 depends on round 1's cumulative scores and chosen set, and on the Adam state."""
    full = less_trainer(tmp_path / "full")
    full.train()
    less_trainer(tmp_path / "cut", callbacks=[StopAt(2)]).train()  # right after round 1
    saved = load_selection_state(tmp_path / "cut" / "checkpoint-2")["sampler"]["selector"]
    assert sorted(saved) == ["chosen", "scores"]
    resumed = less_trainer(tmp_path / "cut")
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-2"))
    assert {r: s.indices for r, s in resumed.selections.items()} == {
        r: s.indices for r, s in full.selections.items()
    }
    assert resumed.selections[2].scores == pytest.approx(full.selections[2].scores, abs=1e-6)
    assert resumed.selector.state_dict()["chosen"] == full.selector.state_dict()["chosen"]

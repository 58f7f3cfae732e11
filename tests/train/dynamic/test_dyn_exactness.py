"""Exact schedule: every example that reaches the loss belongs to the right round.

The probe selector picks a block of the pool whose position depends on how many steps
Adam has taken, so a selection made one step early or late picks different examples;
the expected selections are computed independently from the schedule.
"""

from __future__ import annotations

import statistics

import pytest
from dyn_helpers import (
    IndexCollator,
    ProbeSelector,
    RecordingTrainer,
    make_pool,
    probe_indices,
    tiny_llama,
    training_args,
)

from dataflex.registry import build_selector
from dataflex.train.dynamic import SelectionSchedule, warmup_indices

POOL = 30
SEED = 7


def run(tmp_path, schedule, **args):
    ProbeSelector.calls.clear()
    trainer = RecordingTrainer(
        model=tiny_llama(),
        args=training_args(tmp_path, seed=SEED, **args),
        train_dataset=make_pool(POOL),
        data_collator=IndexCollator(),
        selector=build_selector("test_probe"),
        schedule=schedule,
        plots=False,
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("accumulation", "workers", "schedule", "extra"),
    [
        (1, 0, SelectionSchedule(2, 3, 2), {}),
        (2, 0, SelectionSchedule(2, 3, 2), {}),
        (1, 2, SelectionSchedule(2, 2, 2), {}),
        (2, 2, SelectionSchedule(0, 2, 2), {"dataloader_persistent_workers": True}),
    ],
    ids=["acc1-w0", "acc2-w0", "acc1-w2", "acc2-w2-persistent-nowarmup"],
)
def test_every_trained_example_comes_from_its_round(tmp_path, accumulation, workers, schedule, extra):
    batch = 2
    trainer = run(
        tmp_path,
        schedule,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        dataloader_num_workers=workers,
        **extra,
    )
    per_step = batch * accumulation
    assert trainer.state.global_step == schedule.total_steps

    # The selector ran after exactly warmup + (r-1)·update steps, on the unwrapped model.
    assert [c["round"] for c in ProbeSelector.calls] == list(range(1, schedule.update_times + 1))
    assert [c["step"] for c in ProbeSelector.calls] == schedule.selection_steps
    assert [c["adam_steps"] for c in ProbeSelector.calls] == schedule.selection_steps
    assert {c["wrapped"] for c in ProbeSelector.calls} == {"LlamaForCausalLM"}

    expected = {
        r: probe_indices(POOL, per_step * schedule.update_step, schedule.start_step(r)) for r in range(1, 3)
    }
    if schedule.warmup_step:
        expected[0] = warmup_indices(POOL, per_step * schedule.warmup_step, SEED)
    assert {r: s.indices for r, s in trainer.selections.items()} == expected

    # Every micro-batch of the steps of round r comes from round r's selection, in order.
    for r in schedule.rounds:
        steps = range(schedule.start_step(r), schedule.start_step(r) + schedule.num_steps(r))
        trained = [i for step, i in trainer.seen if step in steps]
        assert trained == expected[r], f"round {r}"
    assert len(trainer.seen) == schedule.total_steps * per_step


def test_learning_rate_is_the_mean_over_the_steps_since_the_last_round(tmp_path):
    schedule = SelectionSchedule(2, 3, 2)
    run(tmp_path, schedule)
    total, lr0 = schedule.total_steps, 1e-2
    lrs = [lr0 * (1 - k / total) for k in range(total)]  # linear decay, no warm-up
    means = [c["lr"] for c in ProbeSelector.calls]
    assert means == pytest.approx([statistics.fmean(lrs[0:2]), statistics.fmean(lrs[2:5])], rel=1e-12)

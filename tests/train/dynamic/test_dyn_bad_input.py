"""Bad Trainer settings are rejected when the trainer is built, before any training."""

from __future__ import annotations

import pytest
import torch
from dyn_helpers import IndexCollator, count_calls, make_pool, tiny_llama, training_args

from dataflex.errors import ConfigError, DataflexError
from dataflex.registry import build_selector
from dataflex.selectors.base import Selection, Selector
from dataflex.train.dynamic import DynamicSelectTrainer, SelectionSchedule, check_training_args

SCHEDULE = SelectionSchedule(warmup_step=1, update_step=2, update_times=1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"max_steps": 5}, r"max_steps=5 contradicts the selection schedule.*1 \+ 2 x 1 = 3"),
        ({"save_strategy": "epoch"}, "save_strategy='epoch' is not supported"),
        ({"eval_strategy": "epoch"}, "eval_strategy='epoch' is not supported"),
        ({"logging_strategy": "epoch"}, "logging_strategy='epoch' is not supported"),
        ({"train_sampling_strategy": "group_by_length"}, "would reorder the selection"),
        ({"auto_find_batch_size": True}, "auto_find_batch_size is not supported"),
        ({"ignore_data_skip": True}, "ignore_data_skip=True would replay the start of a chunk"),
        ({"accelerator_config": {"split_batches": True}}, r"accelerator_config.split_batches=True changes"),
    ],
)
def test_contradicting_training_arguments(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_training_args(training_args(tmp_path, **overrides), SCHEDULE)


def build(tmp_path, pool=10, selector=None, **overrides):
    return DynamicSelectTrainer(
        model=tiny_llama(),
        args=training_args(tmp_path, **overrides),
        train_dataset=make_pool(pool),
        data_collator=IndexCollator(),
        selector=selector or build_selector("random"),
        schedule=SCHEDULE,
        plots=False,
    )


def test_round_budget_larger_than_the_pool(tmp_path):
    # 2 per device x 3 accumulation x 1 process x 2 steps = 12 > 10
    with pytest.raises(ConfigError, match="asked for 12 examples from a pool of 10 without replacement"):
        build(tmp_path, gradient_accumulation_steps=3)


def test_max_steps_becomes_the_schedule_total(tmp_path):
    trainer = build(tmp_path, max_steps=-1, num_train_epochs=7)
    assert trainer.args.max_steps == SCHEDULE.total_steps


def test_selector_must_be_an_instance(tmp_path):
    with pytest.raises(ConfigError, match="selector must be a dataflex Selector instance, got str"):
        build(tmp_path, selector="random")


class LeavesGradients(Selector):
    """A faulty selector that runs backward into .grad."""

    def select(self, ctx, num_samples):
        batch = ctx.collator([ctx.train_dataset[i] for i in range(2)])
        batch.pop("idx")
        ctx.model(**batch).loss.backward()
        return Selection(indices=list(range(num_samples)))


def test_a_selector_that_touches_gradients_is_stopped(tmp_path):
    trainer = build(tmp_path, selector=LeavesGradients())
    with pytest.raises(DataflexError, match="left gradients in .grad"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert torch.is_grad_enabled()


def test_trainer_blind_to_the_process_group_is_refused(tmp_path, monkeypatch):
    from dataflex.distributed import DistributedView
    from dataflex.train.dynamic import trainer as trainer_module

    # what a CPU torchrun without use_cpu looks like: 2 processes, a Trainer that sees 1
    two = classmethod(lambda cls: DistributedView(0, 2))
    monkeypatch.setattr(trainer_module.DistributedView, "current", two)
    with pytest.raises(ConfigError, match=r"runs 2 processes but the Trainer sees world_size=1.*use_cpu"):
        build(tmp_path)


def test_a_checked_plan_is_not_checked_again_but_must_match_the_trainer(tmp_path, monkeypatch):
    from dataflex.train.dynamic.trainer import check_plan

    args = training_args(tmp_path)
    plan = check_plan(SCHEDULE, build_selector("random"), 10, args, has_eval_dataset=False)
    assert (plan.pool_size, plan.examples_per_step, plan.budget) == (10, 2, 4)
    calls: list[str] = []
    for name in ("check_dynamic_plan", "check_training_args"):
        count_calls(monkeypatch, calls, name)

    def trainer(pool, **kwargs):
        return DynamicSelectTrainer(
            model=tiny_llama(), args=args, train_dataset=make_pool(pool), data_collator=IndexCollator(),
            plots=False, **kwargs,
        )  # fmt: skip

    built = trainer(10, plan=plan)
    assert calls == []  # the plan was checked once, by check_plan
    assert built.selector is plan.selector and built.dynamic_sampler.round_budget(1) == 4
    with pytest.raises(
        ConfigError, match=r"checked for .* \(10, 2, False\), but this Trainer trains with \(12, 2"
    ):
        trainer(12, plan=plan)
    with pytest.raises(ConfigError, match="either plan= or selector= and schedule="):
        trainer(10, plan=plan, schedule=SCHEDULE)
    trainer(10, selector=build_selector("random"), schedule=SCHEDULE)  # built from a script: checked here
    assert sorted(calls) == ["check_dynamic_plan", "check_training_args"]

"""Values that make no sense are refused by name before the model loads; a run that diverges
later stops with a message naming the step and the round; the plan is checked and printed."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import run_cli


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("learning_rate=1e308", "learning_rate: Input should be less than or equal to 10 (got '1e308')"),
        ("learning_rate=.inf", "learning_rate: expected a finite number, got inf."),
        ("learning_rate=.nan", "learning_rate: expected a finite number, got nan."),
        ("learning_rate=-1e-3", "learning_rate: Input should be greater than 0"),
        ("num_train_epochs=.inf", "num_train_epochs: expected a finite number, got inf."),
        ("max_grad_norm=.nan", "max_grad_norm: expected a finite number, got nan."),
        ("adam_epsilon=.nan", "adam_epsilon: expected a finite number, got nan."),  # a TrainingArguments key
    ],
)
def test_non_finite_and_absurd_values_are_refused(refused, override, match):
    refused("train", "less.yaml", override, match=match)


def test_a_non_finite_selector_param_is_refused(refused, work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("proj_dim: 32", "proj_dim: 32\n      candidate_fraction: .nan"))
    refused(
        "train",
        "less.yaml",
        match="selectors.less.params.candidate_fraction: expected a finite number, got nan.",
    )


def test_training_that_diverges_stops_naming_the_step_and_the_round(work):
    result = run_cli("train", "less.yaml", "learning_rate=10")  # allowed, and diverges at once
    assert result.code == 1
    assert "training diverged: selection round 2 at step 2 met NaN or Inf values while scoring" in result.err
    assert "Lower learning_rate (now 10)" in result.err


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ("update_times=1000000000000", "component_name=random"),
            "update_times: the schedule trains warmup_step + update_step x update_times = 1 + 1 x "
            "1000000000000 = 1000000000001 optimizer steps, more than the 10,000,000",
        ),
        (
            ("update_times=7000", "component_name=random"),
            "7001 optimizer steps of 4 examples, 1,166.8 passes over the pool of 24 (more than 1000)",
        ),
    ],
)
def test_a_schedule_that_cannot_finish_is_refused(refused, overrides, match):
    refused("train", "less.yaml", *overrides, match=match)


def test_a_schedule_too_long_with_repeats_is_refused(refused, work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("repeat_across_rounds: false", "repeat_across_rounds: true"))
    refused("train", "less.yaml", "update_times=1000000000000", match="more than the 10,000,000")


def test_the_plan_is_printed_before_the_model_loads(refused):
    # refused by the pool check that follows the plan: the plan was printed, no model loaded
    err = refused(
        "train", "less.yaml", "update_times=3", "per_device_train_batch_size=8", "max_samples=20",
        match="3 rounds x 8 examples = 24 distinct examples, but the pool has 20",
    )  # fmt: skip
    assert (
        "plan: 4 optimizer steps (warm-up 1 + 3 rounds x 1) of 8 examples: 32 examples trained, 1.6 passes "
        "over the pool of 20" in err
    )
    # LESS scores every example not chosen before: 20, 12, then the 4 left (the round that runs dry)
    assert "plan: less selects 8 examples a round; it scores 20 in round 1 to 4 in round 3, 36 in all" in err
    assert "costing about 4.5 training steps (1.1x the training)" in err


def test_a_quoted_number_in_selector_params_is_refused(refused, work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("proj_dim: 32", 'proj_dim: "32"'))
    refused(
        "train", "less.yaml",
        match="selectors.less.params.proj_dim: expected an integer, got the text '32'; write the number "
        "without quotes.",
    )  # fmt: skip


def test_a_float_for_an_integer_selector_param_is_refused(refused, work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("proj_dim: 32", "proj_dim: 32.5"))
    refused("train", "less.yaml", match="selectors.less.params.proj_dim: Input should be a valid integer")


def test_bf16_on_a_machine_without_bf16_says_so(refused, monkeypatch):
    # an accelerator (so no CPU autocast) that transformers finds no bfloat16 on
    monkeypatch.setattr("dataflex.train.runner._has_accelerator", lambda: True)
    monkeypatch.setattr("dataflex.train.precision.bf16_supported", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    err = refused(
        "train", "less.yaml", "bf16=true", match="bf16: true, but this machine has no bfloat16 support"
    )
    assert "Set bf16: false to train in fp32." in err
    assert "use_cpu" not in err


def test_a_non_finite_checkpoint_learning_rate_is_refused(refused, work):
    (work / "select.yaml").write_text(
        "model_name_or_path: model\ndataset: quickstart_train\ndataset_dir: data\ncomponent_name: random\n"
        "components_cfg_file: components.yaml\nselect_count: 4\noutput_dir: sel\n"
        "checkpoints: [model, model]\ncheckpoint_learning_rates: [1.0e-4, .inf]\n"
    )
    refused("select", "select.yaml", match="checkpoint_learning_rates.1: expected a finite number, got inf.")

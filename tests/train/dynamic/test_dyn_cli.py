"""``dataflex-cli train`` with ``train_type: dynamic_select`` on the committed quickstart model."""

from __future__ import annotations

import re

import pytest

from dataflex.cli import main
from dataflex.train.dynamic import load_selection_state, read_selections
from tests.train.conftest import QUICKSTART

SFT = str(QUICKSTART / "sft.yaml")
DYNAMIC = [
    "train_type=dynamic_select",
    "component_name=random",
    "warmup_step=2",
    "update_step=2",
    "update_times=2",
    "per_device_train_batch_size=4",
    "eval_strategy=no",
    "logging_steps=1",
    "save_steps=2",
]


def test_cli_trains_with_dynamic_selection(tmp_path, quickstart_overrides):
    assert main(["train", SFT, *quickstart_overrides, *DYNAMIC, "finetuning_type=lora"]) == 0
    out = tmp_path / "out"
    records = read_selections(out / "dataflex" / "selections.jsonl")
    assert [(r["round"], r["step"], r["chosen"]) for r in records] == [(0, 0, 8), (1, 2, 8), (2, 4, 8)]
    assert all(r["candidates"] == 48 and r["composition"] == {"quickstart_train": 8} for r in records)
    for name in ("loss.png", "composition.png", "scores.png", "log_history.json"):
        assert (out / "dataflex" / name).is_file(), name
    state = load_selection_state(out / "checkpoint-4")
    assert sorted(state["sampler"]["rounds"]) == ["0", "1", "2"]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["update_step=0"], r"update_step: Input should be greater than 0 \(got 0\)"),
        (["update_times=-1"], r"update_times: Input should be greater than 0 \(got -1\)"),
        (["warmup_step=-1"], r"warmup_step: Input should be greater than or equal to 0"),
        (["component_name=randon"], r"component_name: .*'randon'.* Did you mean 'random'"),
        (["components_cfg_file=no/such/components.yaml"], r"components_cfg_file: .*does not exist"),
        (
            ["per_device_train_batch_size=16", "update_step=4"],
            r"asked for 64 examples from a pool of 48 without replacement",
        ),
    ],
)
def test_bad_dynamic_input_is_refused_before_loading(tmp_path, quickstart_overrides, capsys, extra, message):
    assert main(["train", SFT, *quickstart_overrides, *DYNAMIC, *extra]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()

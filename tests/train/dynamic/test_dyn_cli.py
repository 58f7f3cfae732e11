"""``dataflex-cli train examples/quickstart/random.yaml`` (few steps via overrides) on the committed model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dyn_helpers import count_calls

from dataflex.cli import main
from dataflex.configs.components import SHIPPED_COMPONENTS
from dataflex.train.dynamic import load_selection_state, read_selections
from tests.train.conftest import QUICKSTART

CONFIG = str(QUICKSTART / "random.yaml")
ROOT = Path(__file__).resolve().parents[3]
DYNAMIC = [
    f"components_cfg_file={SHIPPED_COMPONENTS}",  # every selector it names is registered on this branch
    "finetuning_type=lora",
    "eval_strategy=no",
    "warmup_step=2",
    "update_step=2",
    "update_times=2",
    "per_device_train_batch_size=4",
    "logging_steps=1",
    "save_steps=2",
]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    overrides = [
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"output_dir={out}",
        "max_samples=48",
    ]
    assert main(["train", CONFIG, *overrides, *DYNAMIC]) == 0
    return out, overrides


def test_cli_trains_with_dynamic_selection(one_process_run):
    out, _ = one_process_run
    records = read_selections(out / "dataflex" / "selections.jsonl")
    assert [(r["round"], r["step"], r["chosen"]) for r in records] == [(0, 0, 8), (1, 2, 8), (2, 4, 8)]
    assert all(r["candidates"] == 48 and r["composition"] == {"quickstart_train": 8} for r in records)
    assert all(sum(r["subtasks"].values()) == 8 for r in records)
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
    assert main(["train", CONFIG, *quickstart_overrides, *DYNAMIC, *extra]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_force_torchrun_trains_on_two_processes_with_the_same_selections(tmp_path, one_process_run):
    one, overrides = one_process_run
    out = tmp_path / "ddp"
    overrides = [o if not o.startswith("output_dir=") else f"output_dir={out}" for o in overrides]
    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "PYTHONPATH": str(ROOT)}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "dataflex.cli", "train", CONFIG, *overrides, *DYNAMIC]
    cmd.append("per_device_train_batch_size=2")  # 2 processes x 2 = the 1-process global batch of 4
    cmd += ["save_steps=1000", "plot_loss=false"]  # only the selections are compared
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "dataflex.relaunch" in proc.stderr and "--nproc_per_node=2" in proc.stderr
    ddp = read_selections(out / "dataflex" / "selections.jsonl")
    assert [r["indices"] for r in ddp] == [
        r["indices"] for r in read_selections(one / "dataflex" / "selections.jsonl")
    ]


def test_one_parse_of_the_components_file_and_one_plan_check_per_run(
    tmp_path, quickstart_overrides, monkeypatch
):
    """``dataflex-cli train`` reads components.yaml once, builds one selector and checks the plan once."""
    import dataflex.configs.components as components_module
    import dataflex.train.runner  # noqa: F401  (loaded, so its imported names are wrapped too)

    calls: list[str] = []
    count_calls(monkeypatch, calls, "read_user_text", components_module)  # every parse reads the file here
    count_calls(monkeypatch, calls, "build_selector", components_module.Components)
    for name in ("check_dynamic_plan", "check_training_args"):
        count_calls(monkeypatch, calls, name)
    assert main(["train", CONFIG, *quickstart_overrides, *DYNAMIC]) == 0
    assert sorted(calls) == ["build_selector", "check_dynamic_plan", "check_training_args", "read_user_text"]


def test_a_broken_components_file_is_refused_before_the_model_loads(
    tmp_path, quickstart_overrides, capsys, monkeypatch
):
    import dataflex.train.runner as runner

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "load_model", no_model)
    broken = tmp_path / "components.yaml"
    broken.write_text("selectors:\n  random:\n    name: random\n    params: {seeed: 1}\n")
    extra = [f"components_cfg_file={broken}"]
    assert main(["train", CONFIG, *quickstart_overrides, *DYNAMIC, *extra]) == 1
    err = capsys.readouterr().err
    assert "components_cfg_file:" in err and "selectors.random.params" in err and "seeed" in err, err
    assert not (tmp_path / "out").exists()

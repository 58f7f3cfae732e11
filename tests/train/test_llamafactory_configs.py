"""Configs in the shapes of the original DataFlex / LLaMA-Factory examples load as they are.

The YAML below is ``examples/train_lora/selectors/{less,loss,random}.yaml`` and
``examples/merge_lora/*.yaml`` of the original project with only paths changed (model,
output, components file); datasets keep their names (``alpaca_en_demo``,
``alpaca_zh_demo``), served from a ``data/`` folder in the working directory as
LLaMA-Factory's default ``dataset_dir`` expects. Standard Trainer keys those users carry
(``metric_for_best_model``, ``greater_is_better``, ``load_best_model_at_end``,
``report_to``, ``early_stopping_steps``) reach ``TrainingArguments`` unchanged, and
everything is checked before the model would load.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from dataflex.errors import ConfigError
from dataflex.train.config import SHIPPED_COMPONENTS, load_export_config, load_train_config
from dataflex.train.runner import build_training_args
from tests.train.conftest import QUICKSTART

HEAD = """\
### model
model_name_or_path: {model}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
lora_rank: 16
lora_alpha: 8
#deepspeed: examples/deepspeed/ds_z3_config.json  # choices: [ds_z0_config.json, ds_z2_config.json, ...]

### dataset
dataset: alpaca_en_demo
template: llama3
cutoff_len: 4096
# max_samples: 100000000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 0
# disable_shuffling: true
seed: 42

### output
output_dir: {out}/{name}
logging_steps: 10
save_steps: 100
plot_loss: true
save_only_model: false
overwrite_output_dir: true

### swanlab
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]
# use_swanlab: true

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 1
learning_rate: 1.0e-4
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
"""

LESS = """
### dynamic_train
train_type: dynamic_select
components_cfg_file: {components}
component_name: less
warmup_step: 10
update_step: 10
update_times: 2

eval_dataset: alpaca_zh_demo

## eval
# val_size: 0.001
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 1000
"""

LOSS = """
### Dataflex args
train_type: dynamic_select   # 选择训练器类型。可选值包括：
                          # "dynamic_select" - 动态选择训练器
components_cfg_file: {components}
component_name: loss  # 选择组件名称，对应 components_cfg_file 中定义的组件
warmup_step: 10
update_step: 10
update_times: 2

## eval
# val_size: 0.001
eval_dataset: alpaca_zh_demo
per_device_eval_batch_size: 1
metric_for_best_model: eval_loss
greater_is_better: false
load_best_model_at_end: true
eval_strategy: steps    # choices: [no, steps, epoch]
eval_steps: 10
early_stopping_steps: 3
early_stopping_min_delta: 0.01

# FORCE_TORCHRUN=1 DISABLE_VERSION_CHECK=1 dataflex-cli train examples/train_lora/selectors/loss.yaml
"""

RANDOM = """
### Dataflex args
train_type: dynamic_select
components_cfg_file: {components}
component_name: random  # 选择组件名称，对应 components_cfg_file 中定义的组件
warmup_step: 10
update_step: 10
update_times: 2
"""

MERGE_LLAMA3 = """\
### model
model_name_or_path: {model}
adapter_name_or_path: {out}/less
template: llama3
trust_remote_code: true

### export
export_dir: {out}/Llama-3.1-8B_lora_sft
export_size: 5
export_device: cpu  # choices: [cpu, auto]
export_legacy_format: false
"""

MERGE_QWEN = """\
### Note: DO NOT use quantized model or quantization_bit when merging lora adapters

### model
model_name_or_path: {model}
adapter_name_or_path: {out}/less
template: qwen
trust_remote_code: true

### export
export_dir: {out}/Qwen2.5-7B-Instruct_lora_sft
export_size: 5
export_device: cpu  # choices: [cpu, auto]
export_legacy_format: false
"""


@pytest.fixture
def lf_workdir(tmp_path, monkeypatch):
    """A working directory whose ``data/`` serves alpaca_en_demo / alpaca_zh_demo (quickstart rows)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(QUICKSTART / "data" / "train.json", data / "alpaca_en_demo.json")
    shutil.copy(QUICKSTART / "data" / "valid.json", data / "alpaca_zh_demo.json")
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    info = {
        name: {"file_name": f"{name}.json", "columns": columns}
        for name in ("alpaca_en_demo", "alpaca_zh_demo")
    }
    (data / "dataset_info.json").write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(tmp_path, name: str, tail: str):
    fill = {"model": QUICKSTART / "model", "out": tmp_path / "saves", "components": SHIPPED_COMPONENTS}
    path = tmp_path / f"{name}.yaml"
    path.write_text((HEAD + tail).format(name=name, **fill))
    return path


@pytest.mark.parametrize(("name", "tail"), [("less", LESS), ("loss", LOSS), ("random", RANDOM)])
def test_original_selector_configs_load_and_pass_the_pre_model_checks(lf_workdir, caplog, name, tail):
    from dataflex.data import load_dataset_examples
    from dataflex.train.runner import plan_dynamic_selection

    cfg = load_train_config(_write(lf_workdir, name, tail))
    assert cfg.component_name == name and cfg.template == "llama3"
    args = build_training_args(cfg)
    if name == "loss":
        assert cfg.extra_training_args == {
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "load_best_model_at_end": True,
        }
        assert (args.metric_for_best_model, args.greater_is_better, args.load_best_model_at_end) == (
            "eval_loss",
            False,
            True,
        )
        assert (cfg.early_stopping_steps, cfg.early_stopping_min_delta) == (3, 0.01)
    assert len(load_dataset_examples("alpaca_en_demo", cfg.dataset_dir)) == 1050
    plan_dynamic_selection(cfg, 1050, args)  # schedule, selector and TrainingArguments: no contradiction


def test_original_merge_configs_load(lf_workdir):
    for text in (MERGE_LLAMA3, MERGE_QWEN):
        path = lf_workdir / "merge.yaml"
        path.write_text(text.format(model=QUICKSTART / "model", out=lf_workdir / "saves"))
        cfg = load_export_config(path)
        assert cfg.export_device == "cpu" and cfg.export_size == 5


def test_pass_through_keys_also_work_as_overrides(lf_workdir):
    cfg = load_train_config(_write(lf_workdir, "random", RANDOM), ["optim=adafactor", "seed=7"])
    assert cfg.extra_training_args == {"optim": "adafactor"} and cfg.seed == 7
    assert build_training_args(cfg).optim.value == "adafactor"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["metric_for_best_modle=eval_loss"],
            r"override 'metric_for_best_modle=eval_loss': unknown key 'metric_for_best_modle'\. "
            r"Did you mean 'metric_for_best_model'",
        ),
        (["remove_unused_columns=true"], r"remove_unused_columns: not supported: dataflex keeps"),
        (["early_stopping_steps=3"], r"early_stopping_steps: needs evaluations"),
    ],
)
def test_misspelled_and_refused_keys_are_errors(lf_workdir, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(_write(lf_workdir, "random", RANDOM), extra)


def test_misspelled_key_in_the_file_is_an_error(lf_workdir):
    path = _write(lf_workdir, "random", RANDOM + "greater_is_beter: false\n")
    message = r"greater_is_beter: unknown key 'greater_is_beter'\. Did you mean 'greater_is_better'"
    with pytest.raises(ConfigError, match=message):
        load_train_config(path)


def test_the_seed_configs_warn_before_loading(lf_workdir, caplog):
    from dataflex.train.early_warnings import warn_before_loading
    from dataflex.train.model import check_model_path

    cfg = load_train_config(_write(lf_workdir, "less", LESS))
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        messages = warn_before_loading(
            cfg, check_model_path(cfg.model_name_or_path), has_accelerator=False, examples_per_step=1
        )
    assert len(messages) == 3
    assert messages[0].startswith("bf16: true, but there is no GPU/accelerator")
    assert "cutoff_len: 4096 exceeds the model's max_position_embeddings (512)" in messages[1]
    assert "num_train_epochs: 1 is ignored with train_type: dynamic_select" in messages[2]
    assert "= 30 optimizer steps x 1 examples" in messages[2]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == messages

"""Every check before the model loads: each bad input fails in seconds, with a message naming
the key and the fix, exit code 1, no traceback, and nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.reliability.conftest import write_components


def test_output_dir_empty(refused):
    refused("train", "less.yaml", "output_dir=", match="output_dir: is empty")


def test_output_dir_below_a_file(refused, work):
    (work / "notes.txt").write_text("mine\n")
    refused("train", "less.yaml", "output_dir=notes.txt/run", match="'notes.txt' is a file")


def test_cache_dir_is_a_file(refused, work):
    (work / "cache").write_text("not a folder\n")
    (work / "components.yaml").write_text(
        (work / "components.yaml").read_text().replace("proj_dim: 32", "proj_dim: 32\n      cache_dir: cache")
    )
    refused("train", "less.yaml", match="less: cache_dir: 'cache' is a file, not a folder.")


def test_report_to_wandb_without_wandb(refused):
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed here")
    refused("train", "less.yaml", "report_to=wandb", match="report_to: 'wandb' needs the wandb package")


def test_subtask_field_missing_from_eval_rows(refused, work):
    write_components(work, subtask_field="category")
    refused("train", "less.yaml", match="subtask_field is 'category' but eval example 0 has no 'category'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_projector_without_cuda(refused, work):
    write_components(work, projector="cuda")
    refused("train", "less.yaml", match="projector: cuda needs a CUDA GPU")


def test_pool_runs_dry_across_rounds(refused):
    # 3 rounds x 8 distinct examples from 20 usable rows: round 3 would have too few left
    refused(
        "train", "less.yaml", "update_times=3", "per_device_train_batch_size=8", "max_samples=20",
        match="3 rounds x 8 examples = 24 distinct examples, but the pool has 20",
    )  # fmt: skip


def test_pool_with_replacement_does_not_run_dry(work):
    from types import SimpleNamespace

    from dataflex.registry import build_selector
    from dataflex.train.dynamic.schedule import SelectionSchedule
    from dataflex.train.preflight import check_selection_inputs

    schedule = SelectionSchedule(warmup_step=1, update_step=1, update_times=3)
    cfg = SimpleNamespace(output_dir="out")
    check_selection_inputs(
        cfg, build_selector("less", proj_dim=8, repeat_across_rounds=True), schedule, [0] * 20, None, 8
    )
    with pytest.raises(Exception, match="round 3 would run dry"):
        check_selection_inputs(cfg, build_selector("less", proj_dim=8), schedule, [0] * 20, None, 8)


def test_proj_dim_too_large_for_memory(refused, work):
    (work / "components.yaml").write_text(
        (work / "components.yaml").read_text().replace("proj_dim: 32", "proj_dim: 100000000000")
    )
    refused("train", "less.yaml", match="less: proj_dim: 100000000000 makes the round's features")


def test_warmup_too_long(refused):
    from types import SimpleNamespace

    from dataflex.registry import build_selector
    from dataflex.train.dynamic.schedule import SelectionSchedule
    from dataflex.train.preflight import check_selection_inputs

    refused(
        "train", "less.yaml", "warmup_step=1000000000000", match="optimizer steps, more than the 10,000,000"
    )
    schedule = SelectionSchedule(warmup_step=10**12, update_step=1, update_times=1)  # the memory check itself
    with pytest.raises(Exception, match="warm-up indices, about"):
        check_selection_inputs(
            SimpleNamespace(output_dir="out"), build_selector("random"), schedule, [0] * 8, None, 4
        )


def test_max_steps_contradicts_the_schedule(refused):
    refused("train", "less.yaml", "max_steps=100", match="max_steps: 100 contradicts the selection schedule")


def test_update_step_true_is_not_one(refused):
    refused("train", "less.yaml", "update_step=true", match="update_step: expected a number, got true")


def test_duplicate_yaml_key(refused, work):
    (work / "dup.yaml").write_text((work / "less.yaml").read_text() + "lora_rank: 8\n")
    refused("train", "dup.yaml", match="key 'lora_rank' is given twice (lines 4 and 23)")


def test_config_that_is_not_utf8(refused, work):
    (work / "latin1.yaml").write_bytes(
        (work / "less.yaml").read_bytes() + "# r\xe9sum\xe9\n".encode("latin-1")
    )
    refused("train", "latin1.yaml", match="is not UTF-8 text")


def test_components_file_that_is_not_utf8(refused, work):
    (work / "components.yaml").write_bytes((work / "components.yaml").read_bytes() + b"# \xff\n")
    refused("train", "less.yaml", match="components file 'components.yaml' is not UTF-8 text")


def test_data_file_that_is_not_utf8(refused, work):
    (work / "data" / "train.json").write_bytes(b'[{"instruction": "caf\xe9", "output": "x"}]')
    refused("train", "less.yaml", match="dataset file 'data/train.json' is not UTF-8 text")


def test_folder_given_as_config(refused, work):
    refused("train", "data", match="config file 'data' is a folder, not a file")


def test_misspelled_dataset_info_key(refused, work):
    info_path = work / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["quickstart_train"]["formating"] = info["quickstart_train"].pop("formatting", "alpaca")
    info_path.write_text(json.dumps(info))
    refused(
        "train",
        "less.yaml",
        match="quickstart_train.formating: unknown key 'formating'. Did you mean 'formatting'",
    )


def test_changed_lora_rank_on_resume(refused, work):
    ckpt = work / "old" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 8, "lora_dropout": 0.0}))
    (ckpt / "trainer_state.json").write_text("{}")  # a whole checkpoint, only of another rank
    save_file({"q_proj.lora_A.weight": torch.zeros(16, 8)}, ckpt / "adapter_model.safetensors")
    refused("train", "less.yaml", f"resume_from_checkpoint={ckpt}", match="was trained with lora_rank: 16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_offline_select_on_cuda_without_cuda(refused, work):
    (work / "select.yaml").write_text(
        "model_name_or_path: model\ndataset: quickstart_train\ndataset_dir: data\n"
        "component_name: random\ncomponents_cfg_file: components.yaml\nselect_count: 4\n"
        "output_dir: sel\ndevice: cuda\n"
    )
    refused("select", "select.yaml", match="device: 'cuda', but no CUDA device is visible")


def test_a_boolean_for_a_selector_number_is_refused(refused, work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("proj_dim: 32", "proj_dim: true"))
    refused("train", "less.yaml", match="selectors.less.params: proj_dim: expected a number, got true")


def test_offline_proj_dim_too_large_for_memory(refused, work):
    text = (work / "components.yaml").read_text()
    (work / "components.yaml").write_text(
        text.replace("proj_dim: 32", "proj_dim: 100000000000\n      gradient_type: sgd")
    )
    (work / "select.yaml").write_text(
        "model_name_or_path: model\ndataset: quickstart_train\neval_dataset: quickstart_valid\n"
        "dataset_dir: data\ncomponent_name: less\ncomponents_cfg_file: components.yaml\n"
        "select_count: 4\noutput_dir: sel\nmax_samples: 24\ncutoff_len: 64\n"
    )
    refused("select", "select.yaml", match="less: proj_dim: 100000000000 makes the round's features")

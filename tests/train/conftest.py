"""Fixtures of the training tests: the seed guide's YAML shapes and the quickstart paths."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"

# The seed guide's less.yaml, verbatim.
SEED_LESS_YAML = """\
### model
model_name_or_path: meta-llama/Llama-3.1-8B
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
lora_rank: 16
lora_alpha: 8
deepspeed: examples/deepspeed/ds_z3_config.json

### dataset
dataset: alpaca_en_demo
template: llama3
cutoff_len: 4096
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 0
seed: 42

### output
output_dir: ../dataflex_saves/Llama-3.1-8B/less
logging_steps: 10
save_steps: 100
plot_loss: true
save_only_model: false
overwrite_output_dir: true

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 1
learning_rate: 1.0e-4
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000

### dynamic_train
train_type: dynamic_select
components_cfg_file: src/dataflex/configs/components.yaml
component_name: less
warmup_step: 10
update_step: 10
update_times: 2

eval_dataset: alpaca_zh_demo
"""

# The seed guide's merge YAML, verbatim.
SEED_MERGE_YAML = """\
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
adapter_name_or_path: ../dataflex_saves/Llama-3.1-8B/less
template: llama3
trust_remote_code: true

export_dir: ../dataflex_saves/Llama-3.1-8B_lora_sft
export_size: 5
export_device: cpu  # choices: [cpu, auto]
export_legacy_format: false
"""

COMPONENTS_YAML = """\
selectors:
  less:
    name: less
    params: {proj_dim: 4096}
  loss:
    name: loss
    params: {}
  random:
    name: random
    params: {seed: null}
"""


@pytest.fixture
def components_file(tmp_path) -> Path:
    """A components.yaml with less, loss and random keys (read as YAML, not built)."""
    path = tmp_path / "components.yaml"
    path.write_text(COMPONENTS_YAML)
    return path


@pytest.fixture
def seed_less(tmp_path) -> Path:
    path = tmp_path / "less.yaml"
    path.write_text(SEED_LESS_YAML)
    return path


@pytest.fixture
def quickstart_overrides(tmp_path) -> list[str]:
    """Overrides running examples/quickstart/sft.yaml from any cwd into a fresh output_dir."""
    return [
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"output_dir={tmp_path / 'out'}",
        "max_samples=48",
    ]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train tiny models on one thread: on a shared 2-core machine, two spinning OpenMP threads
    per process make small matmuls an order of magnitude slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""The seed guide's ``examples/train_lora/selectors/less.yaml`` trains under its ZeRO-3 config.

Exactly the shipped file, with the two changes a CPU machine needs (the quickstart
model instead of the 8B hub model, ``bf16: false``), run as a user would:
``FORCE_TORCHRUN=1 dataflex-cli train less.yaml`` on 2 processes, from a folder where
its relative paths (``examples/deepspeed/ds_z3_config.json``, ``data``, the components
file, ``../dataflex_saves``) resolve. Overrides only shrink the run to CI size.
The engine-level test (tests/engines) shows that these selections equal DDP's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from dataflex.train.dynamic import read_selections
from tests.train.conftest import QUICKSTART, REPO

SEED = REPO / "examples" / "train_lora" / "selectors" / "less.yaml"
CI_SIZE = [
    "max_samples=40",
    "preprocessing_num_workers=1",
    "cutoff_len=256",
    "warmup_step=2",
    "update_step=2",
    "update_times=1",
]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="pip install 'dataflex[deepspeed]'")
def test_seed_less_yaml_trains_under_its_zero3_config(tmp_path, shared_data):
    text = SEED.read_text()
    assert "deepspeed: examples/deepspeed/ds_z3_config.json" in text and "component_name: less" in text
    text = text.replace("meta-llama/Llama-3.1-8B", str(QUICKSTART / "model")).replace(
        "bf16: true", "bf16: false"
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "less.yaml").write_text(text)
    for name, target in {
        "examples": REPO / "examples",
        "dataflex": REPO / "dataflex",
        "data": shared_data,
    }.items():
        (run / name).symlink_to(target)
    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "PYTHONPATH": str(REPO)}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "dataflex.cli", "train", "less.yaml", *CI_SIZE],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    out = tmp_path / "dataflex_saves" / "Llama-3.1-8B" / "less"  # the seed's output_dir, from run/
    records = read_selections(out / "dataflex" / "selections.jsonl")
    assert [r["round"] for r in records] == [0, 1]
    assert records[1]["metadata"]["transform"] == "adam"  # full Adam moments read under ZeRO-3
    assert len(records[1]["indices"]) == 2 * 2  # world 2 x batch 1 x update_step 2
    counts = re.search(r"trainable parameters: (\d+) of (\d+)", log)
    assert counts is not None and 0 < int(counts[1]) < int(counts[2]), counts  # full sizes, not shards
    assert (out / "adapter_model.safetensors").is_file()
    step_dirs = list(out.glob("checkpoint-*/global_step*"))
    assert step_dirs, "no DeepSpeed checkpoint: the run did not use the ZeRO config"
    assert {p.name for p in step_dirs[0].iterdir()} >= {
        f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)
    }

"""The Trainer's own ``fsdp`` / ``fsdp_config`` keys from ``dataflex-cli train``, with LESS.

Two runs of the quickstart LESS config under ``FORCE_TORCHRUN=1`` on 2 CPU processes
(gloo), the same seed and global batch (2 processes x 2): one with DDP, one with
LLaMA-Factory's ``fsdp: "full_shard auto_wrap"`` and an ``fsdp_config`` JSON file written
with accelerate's ``fsdp_`` key prefixes. Every round must pick the same examples, with
the same scores (within 1e-4), and the FSDP run must really have been sharded: each
round's record names the engine that held the parameters (``fsdp2``: ``DTensor`` shards;
accelerate alone would have trained this run with DDP on the CPU), and the checkpoint is
the Trainer's FSDP checkpoint. LESS reads the full Adam moments in both (``transform:
adam``), and the saved adapter has the model's full shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from dataflex.train.dynamic import read_selections
from tests.train.conftest import QUICKSTART
from tests.train.dynamic.test_dyn_torchrun_scoring import SHORT as DDP_SHORT

ROOT = Path(__file__).resolve().parents[2]
# the DDP scoring test's short run, saving once at its end (to find the FSDP checkpoint)
SHORT = [o for o in DDP_SHORT if not o.startswith("save_steps")] + [
    "save_steps=6",
    "per_device_train_batch_size=2",
]


def train(folder: Path, *extra: str) -> str:
    """``dataflex-cli train`` of the quickstart LESS config on 2 gloo processes; its stderr."""
    folder.mkdir()
    components = folder / "components.yaml"
    params = {"gradient_type": "adam", "proj_dim": 32, "seed": 123, "cache_dir": str(folder / "cache")}
    components.write_text(yaml.safe_dump({"selectors": {"less": {"name": "less", "params": params}}}))
    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "PYTHONPATH": str(ROOT)}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "dataflex.cli",
        "train",
        str(QUICKSTART / "less.yaml"),
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"output_dir={folder / 'out'}",
        f"components_cfg_file={components}",
        *SHORT,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--nproc_per_node=2" in proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_fsdp_keys_select_like_ddp(tmp_path):
    fsdp_config = tmp_path / "fsdp_config.json"
    fsdp_config.write_text(
        json.dumps({"fsdp_version": 2, "fsdp_transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    )
    train(tmp_path / "ddp")
    train(tmp_path / "fsdp", "fsdp=full_shard auto_wrap", f"fsdp_config={fsdp_config}")

    ddp = read_selections(tmp_path / "ddp" / "out" / "dataflex" / "selections.jsonl")
    fsdp = read_selections(tmp_path / "fsdp" / "out" / "dataflex" / "selections.jsonl")
    assert [r["engine"] for r in ddp] == ["plain"] * 3
    assert [r["engine"] for r in fsdp] == ["fsdp2"] * 3  # really sharded, not DDP under another name
    assert [(r["round"], r["step"], r["chosen"]) for r in fsdp] == [(0, 0, 8), (1, 2, 8), (2, 4, 8)]
    assert [r["indices"] for r in fsdp] == [r["indices"] for r in ddp]
    assert ddp[1]["indices"] != ddp[2]["indices"]  # the rounds are not one replayed pick
    for a, b in zip(ddp[1:], fsdp[1:], strict=True):
        assert a["metadata"]["transform"] == b["metadata"]["transform"] == "adam"
        assert b["scores"] == pytest.approx(a["scores"], rel=1e-4, abs=1e-6 * max(map(abs, a["scores"])))

    checkpoint = tmp_path / "fsdp" / "out" / "checkpoint-6"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()  # the Trainer's FSDP checkpoint
    assert not (tmp_path / "ddp" / "out" / "checkpoint-6" / "pytorch_model_fsdp.bin").exists()
    reference = load_file(tmp_path / "ddp" / "out" / "adapter_model.safetensors")
    shapes = {k: v.shape for k, v in reference.items()}
    saved = load_file(tmp_path / "fsdp" / "out" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == shapes  # full tensors, not one rank's shard

"""LESS and loss inside the Trainer under ``FORCE_TORCHRUN=1``: 2 CPU processes on gloo.

Each selector runs ``dataflex-cli train`` twice on the quickstart model: in this process
with a global batch of 4, and relaunched under torchrun on 2 processes of 2 each. The
README's promise is the same seed, the same selections, on one process or several; the
two processes score disjoint shards of the pool and gather them, and the sampler refuses
a round whose ranks disagree, so a run that finishes had identical selections on both
ranks. The loss run scores a seeded half of the pool (``candidate_fraction: 0.5``), so the
draw too must be the same on every rank and in the one-process run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dataflex.cli import main
from dataflex.train.dynamic import read_selections
from tests.train.conftest import QUICKSTART

ROOT = Path(__file__).resolve().parents[3]
POOL = 24
PARAMS = {
    "less": {"gradient_type": "adam", "proj_dim": 32, "seed": 123},
    "loss": {
        "focus": "high",
        "temperature": 0.0,
        "batch_size": 4,
        "candidate_fraction": 0.5,
        "repeat_across_rounds": True,
    },
}
# (round, step, chosen, candidates scored): LESS leaves out round 1's picks in round 2
# (repeat_across_rounds: false), loss scores a seeded half of the whole pool each round
ROUNDS = {
    "less": [(0, 0, 8, POOL), (1, 2, 8, POOL), (2, 4, 8, POOL - 8)],
    "loss": [(0, 0, 8, POOL), (1, 2, 8, POOL // 2), (2, 4, 8, POOL // 2)],
}
SHORT = [
    f"max_samples={POOL}",
    "cutoff_len=48",
    "eval_strategy=no",
    "warmup_step=2",
    "update_step=2",
    "update_times=2",
    "logging_steps=1",
    "save_steps=1000",
    "plot_loss=false",
]


def overrides(folder: Path, name: str) -> list[str]:
    """Overrides running examples/quickstart/<name>.yaml into ``folder``, with its own score cache."""
    params = {**PARAMS[name], "cache_dir": str(folder / "cache")} if name == "less" else PARAMS[name]
    components = folder / "components.yaml"
    components.write_text(yaml.safe_dump({"selectors": {name: {"name": name, "params": params}}}))
    return [
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"output_dir={folder / 'out'}",
        f"components_cfg_file={components}",
        *SHORT,
    ]


def scored(record: dict) -> int:
    """Candidates the round scored (the warm-up draws from the whole pool and records none)."""
    return record["metadata"].get("candidates", POOL)


@pytest.mark.parametrize("name", ["less", "loss"])
def test_two_processes_select_like_one_inside_the_trainer(tmp_path, name):
    config = str(QUICKSTART / f"{name}.yaml")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    assert main(["train", config, *overrides(one, name), "per_device_train_batch_size=4"]) == 0

    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "PYTHONPATH": str(ROOT)}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "dataflex.cli", "train", config, *overrides(two, name)]
    cmd.append("per_device_train_batch_size=2")  # 2 processes x 2 = the one-process global batch of 4
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--nproc_per_node=2" in proc.stderr
    assert proc.stderr.count("[dataflex] round 2 at step 4:") == 1, proc.stderr[-4000:]  # rank 0 logs

    single = read_selections(one / "out" / "dataflex" / "selections.jsonl")
    ddp = read_selections(two / "out" / "dataflex" / "selections.jsonl")
    for records in (single, ddp):
        rounds = [(r["round"], r["step"], r["chosen"], scored(r)) for r in records]
        assert rounds == ROUNDS[name]
    assert [r["indices"] for r in ddp] == [r["indices"] for r in single]
    # round 2 is not a replay of round 1 (for loss, which may repeat picks: the model moved)
    assert single[1]["indices"] != single[2]["indices"]
    for a, b in zip(single[1:], ddp[1:], strict=True):
        assert b["scores"] == pytest.approx(a["scores"], rel=1e-3, abs=1e-6 * max(map(abs, a["scores"])))

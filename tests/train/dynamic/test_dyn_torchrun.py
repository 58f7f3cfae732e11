"""torchrun with 2 CPU processes on gloo: the same selections as one process.

Both runs use the state-dependent ``test_cumloss`` selector, which scores its shard
of the pool on each rank and gathers the scores, and the same global batch (4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dyn_helpers import IndexCollator, RecordingTrainer, make_pool, tiny_llama, training_args

from dataflex.errors import ConfigError
from dataflex.launch import env_flag, maybe_relaunch_with_torchrun, torchrun_command
from dataflex.registry import build_selector
from dataflex.train.dynamic import SelectionSchedule, read_selections

ROOT = Path(__file__).resolve().parents[3]
HELPERS = Path(__file__).with_name("dyn_helpers.py")
SCHEDULE = SelectionSchedule(warmup_step=2, update_step=2, update_times=2)
POOL = 24

SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import json
    import sys

    import torch.distributed as dist

    spec = importlib.util.spec_from_file_location("dyn_helpers", sys.argv[1])
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers.register_test_selectors()

    from dataflex.registry import build_selector
    from dataflex.train.dynamic import SelectionSchedule

    out = sys.argv[2]
    trainer = helpers.RecordingTrainer(
        model=helpers.tiny_llama(),
        args=helpers.training_args(out, per_device_train_batch_size=2),
        train_dataset=helpers.make_pool({pool}),
        data_collator=helpers.IndexCollator(),
        selector=build_selector("test_cumloss"),
        schedule=SelectionSchedule(2, 2, 2),
        plots=False,
    )
    trainer.train()
    rank = dist.get_rank()
    with open(f"{{out}}/seen_rank{{rank}}.json", "w") as f:
        json.dump({{"world": dist.get_world_size(), "seen": trainer.seen}}, f)
    dist.barrier()
    dist.destroy_process_group()  # a gloo group left to interpreter teardown can abort a rank
    """
).format(pool=POOL)


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("FORCE_TORCHRUN", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_two_gloo_processes_select_and_train_like_one(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(script), str(HELPERS), str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # dataflex's log lines come from rank 0 only: one line per round, not one per rank
    assert proc.stderr.count("[dataflex] round 1 at step 2:") == 1, proc.stderr[-4000:]

    single = RecordingTrainer(
        model=tiny_llama(),
        args=training_args(tmp_path / "single", per_device_train_batch_size=4),
        train_dataset=make_pool(POOL),
        data_collator=IndexCollator(),
        selector=build_selector("test_cumloss"),
        schedule=SCHEDULE,
        plots=False,
    )
    single.train()

    ddp_records = read_selections(out / "dataflex" / "selections.jsonl")
    one_records = read_selections(tmp_path / "single" / "dataflex" / "selections.jsonl")
    assert [r["round"] for r in ddp_records] == [0, 1, 2]
    assert [r["indices"] for r in ddp_records] == [r["indices"] for r in one_records]
    assert [r["step"] for r in ddp_records] == [0, 2, 4]

    # Each rank trained on its own part of every global batch; together, exactly the batch.
    ranks = [json.loads((out / f"seen_rank{r}.json").read_text()) for r in range(2)]
    assert {r["world"] for r in ranks} == {2}
    for step in range(SCHEDULE.total_steps):
        parts = [[i for s, i in r["seen"] if s == step] for r in ranks]
        assert all(len(p) == 2 for p in parts)
        batch = [i for s, i in single.seen if s == step]
        assert sorted(parts[0] + parts[1]) == sorted(batch)


def test_no_relaunch_without_the_flag_or_inside_torchrun(monkeypatch):
    monkeypatch.setenv("FORCE_TORCHRUN", "0")
    assert maybe_relaunch_with_torchrun(["train", "x.yaml"]) is None
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert maybe_relaunch_with_torchrun(["train", "x.yaml"]) is None


def test_torchrun_command_reads_the_llamafactory_variables():
    env = {
        "NPROC_PER_NODE": "3",
        "NNODES": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    cmd = torchrun_command(["train", "cfg.yaml"], environ=env)
    assert cmd[:3] == [sys.executable, "-m", "dataflex.relaunch"]  # torchrun, run in-process there
    assert "--nproc_per_node=3" in cmd and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert "--master_addr=10.0.0.1" in cmd and "--master_port=29500" in cmd
    assert cmd[-4:] == ["-m", "dataflex.cli", "train", "cfg.yaml"]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE='two' must be an integer"),
        ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE=0 must be >= 1"),
    ],
)
def test_bad_launcher_variables_are_rejected(env, match):
    with pytest.raises(ConfigError, match=match):
        torchrun_command([], environ=env)


def test_force_torchrun_must_be_a_boolean():
    with pytest.raises(ConfigError, match="FORCE_TORCHRUN='maybe' is not a boolean"):
        env_flag("FORCE_TORCHRUN", {"FORCE_TORCHRUN": "maybe"})
    assert env_flag("FORCE_TORCHRUN", {"FORCE_TORCHRUN": "true"}) is True
    assert env_flag("FORCE_TORCHRUN", {}) is None

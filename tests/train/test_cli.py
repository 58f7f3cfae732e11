"""The train/export subcommands: exit codes, error printing, FORCE_TORCHRUN relaunch."""

from __future__ import annotations

import sys

from dataflex.cli import main, torchrun_command


def test_config_error_exits_1_with_the_message(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_name_or_path: m\ndataset: d\noutput_dir: o\nlearning_rte: 1\n")
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "dataflex-cli train: error:" in err
    assert "unknown key 'learning_rte'. Did you mean 'learning_rate'" in err
    assert main(["export", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_force_torchrun_relaunches_train_under_torchrun():
    env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "4", "MASTER_PORT": "29600"}
    cmd = torchrun_command(["cfg.yaml", "seed=1"], env)
    assert cmd == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node_rank", "0",
        "--nproc_per_node", "4", "--master_addr", "127.0.0.1", "--master_port", "29600",
        "-m", "dataflex.cli", "train", "cfg.yaml", "seed=1",
    ]  # fmt: skip
    assert torchrun_command(["cfg.yaml"], {**env, "LOCAL_RANK": "0"}) is None  # already a worker
    assert torchrun_command(["cfg.yaml"], {}) is None

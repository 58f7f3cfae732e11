"""Engine combinations that cannot work are refused before the model loads, with the fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dataflex.engines import check_engine_config, deepspeed_stage
from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART, REPO

Z3 = str(REPO / "examples" / "deepspeed" / "ds_z3_config.json")


# A process of its own: hiding deepspeed from find_spec would stick in accelerate's cached checks.
HIDE_DEEPSPEED = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name == "deepspeed" else real(name, *a, **k)
from dataflex.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_deepspeed_missing_names_the_extra(quickstart_overrides, tmp_path):
    cmd = [sys.executable, "-c", HIDE_DEEPSPEED, "train", str(QUICKSTART / "sft.yaml")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FORCE_TORCHRUN": "0"}
    proc = subprocess.run(
        [*cmd, *quickstart_overrides, f"deepspeed={Z3}"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "DeepSpeed is not installed. Install it with: pip install 'dataflex[deepspeed]'" in proc.stderr
    assert "No package metadata" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_less_under_zero3_refuses_norm_weights_before_loading(quickstart_overrides, tmp_path):
    overrides = [*quickstart_overrides, f"deepspeed={Z3}", "finetuning_type=full"]
    cfg = load_train_config(QUICKSTART / "less.yaml", overrides)
    with pytest.raises(
        ConfigError, match=r"under DeepSpeed ZeRO-3 is not supported.*Use finetuning_type: lora"
    ):
        run_train(cfg)
    assert not (tmp_path / "out").exists()


def test_what_is_allowed(tmp_path):
    check_engine_config(Z3, finetuning_type="lora", selector="less")
    check_engine_config(Z3, finetuning_type="full", selector="loss")  # forward only
    check_engine_config({"zero_optimization": {"stage": 2}}, finetuning_type="full", selector="less")
    check_engine_config(None, finetuning_type="full", selector="less")
    assert deepspeed_stage(Z3) == 3


def test_unreadable_deepspeed_configs(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text("{stage: 3")
    with pytest.raises(ConfigError, match=r"is not valid JSON"):
        deepspeed_stage(str(bad))
    with pytest.raises(ConfigError, match=r"zero_optimization.stage must be 0, 1, 2 or 3; got 4"):
        deepspeed_stage({"zero_optimization": {"stage": 4}})

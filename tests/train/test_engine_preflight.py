"""Engine combinations that cannot work are refused before the model loads, with the fix."""

from __future__ import annotations

import pytest

from dataflex.engines import check_engine_config, deepspeed_stage, preflight
from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART, REPO

Z3 = str(REPO / "examples" / "deepspeed" / "ds_z3_config.json")


def test_deepspeed_missing_names_the_extra(quickstart_overrides, tmp_path, monkeypatch):
    # dataflex's own availability check; hiding the package from importlib would also stick
    # in accelerate's cached availability checks for the rest of the session
    monkeypatch.setattr(preflight, "deepspeed_installed", lambda: False)
    cfg = load_train_config(QUICKSTART / "sft.yaml", [*quickstart_overrides, f"deepspeed={Z3}"])
    with pytest.raises(ConfigError) as err:
        run_train(cfg)
    assert "DeepSpeed is not installed. Install it with: pip install 'dataflex[deepspeed]'" in str(err.value)
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

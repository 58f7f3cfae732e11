"""``key=value`` overrides of list keys: YAML lists and comma-separated names both work."""

from __future__ import annotations

import pytest

from dataflex.configs.yaml_files import apply_overrides, validate_model
from dataflex.errors import ConfigError
from dataflex.offline.config import OfflineSelectConfig
from dataflex.train.config import TrainConfig

BASE = {"model_name_or_path": "m", "dataset": "pool", "output_dir": "out", "select_count": 4}


@pytest.mark.parametrize("value", ["[ck/a, ck/b]", "ck/a,ck/b", " ck/a , ck/b "])
def test_select_checkpoints_override_is_a_list(value):
    raw = apply_overrides(BASE, [f"checkpoints={value}"], OfflineSelectConfig)
    assert validate_model(OfflineSelectConfig, raw, "select.yaml:").checkpoints == ["ck/a", "ck/b"]


def test_numeric_list_override_is_typed_by_the_schema():
    raw = apply_overrides(
        BASE, ["checkpoints=a,b", "checkpoint_learning_rates=2e-3,1e-3"], OfflineSelectConfig
    )
    cfg = validate_model(OfflineSelectConfig, raw, "select.yaml:")
    assert cfg.checkpoint_learning_rates == [2e-3, 1e-3]
    raw = apply_overrides(BASE, ["checkpoint_learning_rates=null"], OfflineSelectConfig)
    assert validate_model(OfflineSelectConfig, raw, "").checkpoint_learning_rates is None


def test_train_list_keys_and_text_keys_keep_their_rules():
    raw = apply_overrides({}, ["dataset=[alpaca_en_demo, identity]", "output_dir=123"], TrainConfig)
    assert raw["dataset"] == ["alpaca_en_demo", "identity"]
    assert raw["output_dir"] == "123"
    bad = apply_overrides(BASE, ["checkpoint_learning_rates=fast,slow"], OfflineSelectConfig)
    with pytest.raises(ConfigError, match="checkpoint_learning_rates"):
        validate_model(OfflineSelectConfig, bad, "select.yaml:")

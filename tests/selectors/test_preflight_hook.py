"""Training and offline selection call the same Selector.preflight hook, before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from dataflex.errors import ConfigError
from dataflex.offline.config import load_offline_config
from dataflex.offline.select import run_offline_select
from dataflex.registry import SELECTORS, register_selector
from dataflex.selectors.base import PreflightPlan, Selection, SelectionContext, Selector
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


class RefusesInPreflight(Selector):
    """Records the plan it is shown and refuses it."""

    plans: ClassVar[list[PreflightPlan]] = []

    def preflight(self, plan: PreflightPlan) -> None:
        super().preflight(plan)
        RefusesInPreflight.plans.append(plan)
        raise ConfigError(f"{self.name}: refused a pool of {plan.pool_size}")

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        raise AssertionError("select() ran after preflight refused")


@pytest.fixture
def components(tmp_path, monkeypatch):
    if not (QUICKSTART / "model" / "config.json").is_file():
        pytest.skip("examples/quickstart is missing")
    register_selector("test_refuses_in_preflight")(RefusesInPreflight)
    RefusesInPreflight.plans.clear()

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before the selector's preflight")

    monkeypatch.setattr("dataflex.train.runner.load_model", no_model)
    monkeypatch.setattr("dataflex.offline.select.load_model", no_model)
    path = tmp_path / "components.yaml"
    path.write_text(yaml.safe_dump({"selectors": {"r": {"name": "test_refuses_in_preflight", "params": {}}}}))
    yield path
    SELECTORS.unregister("test_refuses_in_preflight")


def test_training_calls_the_hook_with_the_runs_plan(components, tmp_path):
    overrides = [
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"components_cfg_file={components}",
        "component_name=r",
        f"output_dir={tmp_path / 'out'}",
        "max_samples=40",
        "plot_loss=false",
    ]
    with pytest.raises(ConfigError, match="test_refuses_in_preflight: refused a pool of 40"):
        run_train(load_train_config(QUICKSTART / "less.yaml", overrides))
    (plan,) = RefusesInPreflight.plans
    # less.yaml: batch 8 x accumulation 1 x one process, update_step 5, update_times 6
    assert (plan.pool_size, plan.num_samples, plan.rounds) == (40, 40, 6)
    assert plan.eval_dataset is not None and len(plan.eval_dataset) > 0
    assert plan.cache_dir == tmp_path / "out" / "dataflex" / "cache"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_offline_selection_calls_the_same_hook(components, tmp_path):
    cfg = yaml.safe_load((QUICKSTART / "select_less.yaml").read_text())
    cfg.update(
        model_name_or_path=str(QUICKSTART / "model"),
        dataset_dir=str(QUICKSTART / "data"),
        checkpoints=[],
        checkpoint_learning_rates=None,
        components_cfg_file=str(components),
        component_name="r",
        max_samples=20,
        select_fraction=None,
        select_count=5,
        output_dir=str(tmp_path / "selected"),
        device="cpu",
    )
    path = tmp_path / "select.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="test_refuses_in_preflight: refused a pool of 20"):
        run_offline_select(load_offline_config(path))
    (plan,) = RefusesInPreflight.plans
    assert (plan.pool_size, plan.num_samples, plan.rounds, plan.device, plan.cache_dir) == (
        20,
        5,
        1,
        "cpu",
        None,
    )
    assert plan.eval_dataset is not None and len(plan.eval_dataset) > 0

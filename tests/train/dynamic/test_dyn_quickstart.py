"""The quickstart's dynamic configs (random, less, loss) end to end, a few steps each.

Overrides shorten the run (48 candidates, 3 steps) and point ``components_cfg_file`` at
a copy of the quickstart's components with a smaller LESS projection and LoRA, so the
three runs stay within seconds; everything else is the config as shipped.
"""

from __future__ import annotations

import pytest
import yaml

from dataflex.cli import main
from dataflex.configs.components import load_components
from dataflex.train.dynamic import read_selections
from tests.train.conftest import QUICKSTART

FEW_STEPS = [
    "max_samples=48",
    "warmup_step=1",
    "update_step=1",
    "update_times=2",
    "per_device_train_batch_size=4",
    "finetuning_type=lora",
    "eval_strategy=no",
    "save_steps=1000",
    "plot_loss=false",
]


def test_quickstart_components_build_every_selector():
    components = load_components(QUICKSTART / "components.yaml")
    assert components.selector_names() == ["less", "loss", "random"]
    for key in components.selector_names():
        assert components.build_selector(key).registry_name == key


@pytest.mark.parametrize("name", ["random", "less", "loss"])
def test_quickstart_dynamic_config_runs(tmp_path, quickstart_overrides, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)  # relative cache_dir of the less component
    shipped = yaml.safe_load((QUICKSTART / "components.yaml").read_text())
    shipped["selectors"]["less"]["params"]["proj_dim"] = 64
    components = tmp_path / "components.yaml"
    components.write_text(yaml.safe_dump(shipped))
    config = QUICKSTART / f"{name}.yaml"
    assert yaml.safe_load(config.read_text())["component_name"] == name
    overrides = [*quickstart_overrides, f"components_cfg_file={components}", *FEW_STEPS]
    assert main(["train", str(config), *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = out[out.index("***** train metrics *****") :][-3:]  # the last lines: the summary
    assert not any(line.startswith(("trained", "target", "final")) for line in out[:-3])
    assert summary[0].startswith("trained 3 steps") and summary[0].endswith("(selections.jsonl)")
    assert (
        summary[1].startswith("target (uppercase, ") and "warm-up " in summary[1] and "round 2 " in summary[1]
    )
    assert summary[2].startswith("final target loss: not evaluated")
    records = read_selections(tmp_path / "out" / "dataflex" / "selections.jsonl")
    assert [(r["round"], r["step"], r["chosen"], r["candidates"]) for r in records] == [
        (0, 0, 4, 48),
        (1, 1, 4, 48),
        (2, 2, 4, 48),
    ]
    assert all(sum(r["subtasks"].values()) == 4 for r in records)
    if name != "random":
        assert records[2]["scores"] is not None and len(records[2]["scores"]) == 4

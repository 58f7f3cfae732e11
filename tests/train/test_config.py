"""The training/export schemas accept the seed's YAML and reject bad keys with the closest name."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

from dataflex.errors import ConfigError
from dataflex.train.config import ExportConfig, TrainConfig, load_export_config, load_train_config
from tests.train.conftest import QUICKSTART, REPO, SEED_LESS_YAML, SEED_MERGE_YAML


def test_every_seed_key_is_a_schema_key():
    assert set(yaml.safe_load(SEED_LESS_YAML)) <= set(TrainConfig.model_fields)
    assert set(yaml.safe_load(SEED_MERGE_YAML)) <= set(ExportConfig.model_fields)


def test_seed_less_yaml_validates(seed_less, components_file):
    # its components file is elsewhere: reported with every other missing input by check_run_inputs
    assert load_train_config(seed_less).components_cfg_file == "src/dataflex/configs/components.yaml"
    cfg = load_train_config(seed_less, [f"components_cfg_file={components_file}"])
    assert cfg.train_type == "dynamic_select"
    assert cfg.component_name == "less"
    assert cfg.dataset == ["alpaca_en_demo"]
    assert cfg.eval_dataset == ["alpaca_zh_demo"]
    assert cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.lora_target == ["all"]
    assert cfg.deepspeed == "examples/deepspeed/ds_z3_config.json"
    assert cfg.dynamic_total_steps == 30


def test_overrides_are_typed_by_the_schema(seed_less, components_file):
    cfg = load_train_config(
        seed_less,
        [
            f"components_cfg_file={components_file}",
            "learning_rate=2e-5",
            "output_dir=123",
            "lora_target=q_proj, v_proj",
            "dataset=a,b",
            "bf16=false",
            "max_samples=7",
            "template=null",
        ],
    )
    assert cfg.learning_rate == pytest.approx(2e-5)
    assert cfg.output_dir == "123"
    assert cfg.lora_target == ["q_proj", "v_proj"]
    assert cfg.dataset == ["a", "b"]
    assert cfg.bf16 is False
    assert cfg.max_samples == 7
    assert cfg.template is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lerning_rate=1", "unknown key 'lerning_rate'. Did you mean 'learning_rate'"),
        ("lora_rank=abc", "lora_rank: Input should be a valid integer"),
        ("lora_rank=0", "lora_rank: Input should be greater than 0"),
        ("learning_rate", "override 'learning_rate' must look like key=value"),
        ("stage=pt", "stage: 'pt' is not supported; dataflex trains stage: sft only"),
        ("do_train=false", "do_train: false is not supported"),
        ("finetuning_type=freeze", "finetuning_type: 'freeze' is not supported; use lora or full"),
        ("fp16=true", "bf16 and fp16 are both true; choose one"),
        ("lr_scheduler_type=cosin", "unknown scheduler 'cosin'. Did you mean 'cosine'"),
        ("template=lama3", "template: unknown template 'lama3'. Did you mean 'llama3'"),
        ("update_step=0", "update_step: Input should be greater than 0"),
        ("update_times=-1", "update_times: Input should be greater than 0"),
        ("warmup_step=-1", "warmup_step: Input should be greater than or equal to 0"),
        ("component_name=lss", "component_name: no selector 'lss' in .*Did you mean .*'less'"),
        ("component_name=null", "component_name: required with train_type: dynamic_select"),
        ("eval_dataset=null", "eval_dataset: the less selector .* set eval_dataset"),
        ("train_type=dynamic", "train_type: Input should be 'static' or 'dynamic_select'"),
    ],
)
def test_bad_values_are_named(seed_less, components_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(seed_less, [f"components_cfg_file={components_file}", override])


def test_unknown_key_in_file_names_file_and_closest(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model_name_or_path: m\ndataset: d\noutput_dir: o\nlora_rnak: 8\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: lora_rnak: unknown key 'lora_rnak'. Did you mean 'lora_rank'")
    ):
        load_train_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_train_config(path)
    with pytest.raises(ConfigError, match=r"config file .* does not exist"):
        load_train_config(tmp_path / "nope.yaml")


def test_static_run_ignores_dynamic_keys_with_a_log_line(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_train_config(
            None, ["model_name_or_path=m", "dataset=d", "output_dir=o", "component_name=less"]
        )
    assert cfg.train_type == "static"
    assert "train_type is static: component_name/warmup_step/update_* are not used" in caplog.text


def test_a_selector_needing_eval_dataset_says_so_before_eval_strategy(seed_less, components_file):
    overrides = [f"components_cfg_file={components_file}", "eval_dataset=null", "eval_strategy=steps"]
    with pytest.raises(ConfigError) as info:
        load_train_config(seed_less, overrides)
    message = str(info.value)
    assert "eval_dataset: the less selector ('less') scores training examples against a target" in message
    assert "set eval_dataset to the target task's examples" in message
    assert "eval_strategy" not in message


def test_eval_strategy_needs_eval_dataset():
    with pytest.raises(ConfigError, match="eval_strategy: steps needs an eval_dataset"):
        load_train_config(None, ["model_name_or_path=m", "dataset=d", "output_dir=o", "eval_strategy=steps"])


def test_seed_merge_yaml_and_its_errors(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(SEED_MERGE_YAML)
    cfg = load_export_config(path)
    assert cfg.adapter_name_or_path == ["../dataflex_saves/Llama-3.1-8B/less"]
    assert cfg.export_size == 5
    assert cfg.export_device == "cpu"
    with pytest.raises(ConfigError, match="export_legacy_format: true is not supported"):
        load_export_config(path, ["export_legacy_format=true"])
    with pytest.raises(ConfigError, match="export_device: Input should be 'cpu' or 'auto'"):
        load_export_config(path, ["export_device=gpu"])
    with pytest.raises(ConfigError, match=r"unknown key 'export_sise'\. Did you mean 'export_size'"):
        load_export_config(path, ["export_sise=1"])


@pytest.mark.parametrize("name", ["less", "random", "loss"])
def test_shipped_selector_examples_validate(name, components_file):
    path = REPO / "examples" / "train_lora" / "selectors" / f"{name}.yaml"
    cfg = load_train_config(path, [f"components_cfg_file={components_file}"])
    assert cfg.component_name == name
    assert cfg.train_type == "dynamic_select"


@pytest.mark.parametrize("name", ["delta_loss", "nice"])
def test_shipped_selector_examples_validate_with_the_shipped_components(name, monkeypatch):
    monkeypatch.chdir(REPO)  # components_cfg_file: dataflex/configs/components.yaml
    cfg = load_train_config(REPO / "examples" / "train_lora" / "selectors" / f"{name}.yaml")
    assert cfg.component_name == name and cfg.train_type == "dynamic_select"


def test_shipped_merge_example_and_quickstart_validate():
    assert load_export_config(REPO / "examples" / "merge_lora" / "llama3_lora_sft.yaml").export_size == 5
    cfg = load_train_config(QUICKSTART / "sft.yaml")
    assert cfg.train_type == "static"


@pytest.mark.parametrize("name", ["less", "random"])
def test_quickstart_dynamic_configs_validate(name, monkeypatch):
    monkeypatch.chdir(REPO)  # the quickstart configs use paths relative to the repository root
    cfg = load_train_config(QUICKSTART / f"{name}.yaml")
    assert cfg.component_name == name
    assert cfg.dynamic_total_steps == 35  # 5 + 5 x 6
    assert cfg.eval_dataset == ["quickstart_valid"]


def test_components_params_are_validated_with_the_training_config(seed_less, tmp_path):
    comps = tmp_path / "bad_components.yaml"
    comps.write_text("selectors:\n  less:\n    name: less\n    params: {proj_dimm: 8}\n")
    with pytest.raises(
        ConfigError,
        match=r"components_cfg_file: .*selectors\.less\.params\.proj_dimm: unknown key 'proj_dimm'\. "
        r"Did you mean 'proj_dim'\?",
    ):
        load_train_config(seed_less, [f"components_cfg_file={comps}"])


def test_eval_dataset_required_by_selector_class_not_by_key_name(seed_less, tmp_path):
    comps = tmp_path / "components.yaml"
    comps.write_text("selectors:\n  my_target:\n    name: less\n    params: {}\n")
    with pytest.raises(ConfigError, match=r"eval_dataset: the less selector \('my_target'\) scores"):
        load_train_config(
            seed_less, [f"components_cfg_file={comps}", "component_name=my_target", "eval_dataset=null"]
        )


def test_plugins_register_user_selectors_before_the_components_file_is_read(seed_less, tmp_path, monkeypatch):
    from dataflex.registry import SELECTORS

    (tmp_path / "user_plugin_selectors.py").write_text(
        "from dataflex.selectors import RandomSelector, register_selector\n\n\n"
        "@register_selector('user_plugin_random')\n"
        "class UserRandom(RandomSelector):\n"
        '    """A user selector living in the user\'s own module."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    comps = tmp_path / "components.yaml"
    comps.write_text("selectors:\n  mine:\n    name: user_plugin_random\n    params: {seed: 3}\n")
    overrides = [f"components_cfg_file={comps}", "component_name=mine"]
    with pytest.raises(ConfigError, match=r"Unknown selector 'user_plugin_random'"):
        load_train_config(seed_less, overrides)
    try:
        cfg = load_train_config(seed_less, [*overrides, "plugins=user_plugin_selectors"])
        assert cfg.plugins == ["user_plugin_selectors"]
    finally:
        if "user_plugin_random" in SELECTORS:
            SELECTORS.unregister("user_plugin_random")
    with pytest.raises(ConfigError, match=r"plugins: cannot import 'no_such_plugin_module'"):
        load_train_config(seed_less, [*overrides, "plugins=no_such_plugin_module"])


def test_plugins_register_user_templates_before_the_template_is_checked(tmp_path, monkeypatch):
    from dataflex.registry import TEMPLATES

    (tmp_path / "user_plugin_templates.py").write_text(
        "from dataflex.data import Template, register_template\n\n"
        "register_template(Template(name='user_plugin_chat', user='<u>{content}</u>', "
        "assistant='{content}{eos}', description='a user template'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_plugin_templates", raising=False)
    static = ["model_name_or_path=m", "dataset=d", "output_dir=o", "template=user_plugin_chat"]
    with pytest.raises(ConfigError, match=r"template: unknown template 'user_plugin_chat'"):
        load_train_config(None, static)
    try:
        cfg = load_train_config(None, [*static, "plugins=user_plugin_templates"])
        assert cfg.template == "user_plugin_chat"
        assert TEMPLATES.get("user_plugin_chat").description == "a user template"
    finally:
        if "user_plugin_chat" in TEMPLATES:
            TEMPLATES.unregister("user_plugin_chat")


def test_unknown_selector_says_how_a_custom_selector_is_loaded(seed_less, tmp_path):
    comps = tmp_path / "components.yaml"
    comps.write_text("selectors:\n  short:\n    name: shortest\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(seed_less, [f"components_cfg_file={comps}", "component_name=short"])
    message = str(info.value)
    assert "selectors.short.name: Unknown selector 'shortest'. Valid choices: " in message
    assert "list that module under plugins: in the training config (plugins: [my_selectors]" in message
    assert "plugins: [my_selectors.py] for a file" in message


PLUGIN_FILE = (
    "from dataflex.selectors import RandomSelector, register_selector\n\n\n"
    "@register_selector('user_file_random')\n"
    "class UserFileRandom(RandomSelector):\n"
    '    """A user selector in a file named by its path."""\n'
)


def test_plugins_accept_the_path_of_a_python_file(seed_less, tmp_path, monkeypatch):
    from dataflex.registry import SELECTORS

    monkeypatch.chdir(tmp_path)
    Path("my_file_plugin.py").write_text(PLUGIN_FILE)
    Path("components.yaml").write_text("selectors:\n  mine:\n    name: user_file_random\n")
    overrides = ["components_cfg_file=components.yaml", "component_name=mine", "plugins=my_file_plugin.py"]
    monkeypatch.delitem(sys.modules, "my_file_plugin", raising=False)
    try:
        cfg = load_train_config(seed_less, overrides)
        assert cfg.selector_name() == "user_file_random"
        module = sys.modules["my_file_plugin"]
        assert Path(module.__file__) == tmp_path / "my_file_plugin.py"
        # a second load (the runner, a torchrun worker) imports it once, not again
        assert load_train_config(seed_less, overrides).selector_name() == "user_file_random"
        assert sys.modules["my_file_plugin"] is module
    finally:
        if "user_file_random" in SELECTORS:
            SELECTORS.unregister("user_file_random")
        sys.modules.pop("my_file_plugin", None)


def test_plugin_file_errors_name_the_entry_and_the_fix(seed_less, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"plugins: the file 'nope/mine\.py' does not exist \(a \.py entry"):
        load_train_config(seed_less, ["plugins=nope/mine.py"])
    Path("json.py").write_text("")  # its stem is the stdlib's json, already imported
    with pytest.raises(ConfigError, match=r"plugins: 'json\.py' would be imported as module 'json'.*rename"):
        load_train_config(seed_less, ["plugins=json.py"])
    Path("broken_plugin.py").write_text("import no_such_module_of_anyone\n")
    monkeypatch.delitem(sys.modules, "broken_plugin", raising=False)
    with pytest.raises(ConfigError, match=r"plugins: cannot import 'broken_plugin\.py' \(No module named"):
        load_train_config(seed_less, ["plugins=broken_plugin.py"])
    assert "broken_plugin" not in sys.modules  # a failed import leaves no half-made module behind

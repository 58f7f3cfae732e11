from pathlib import Path

import pytest
import yaml

from dataflex.configs import SHIPPED_COMPONENTS, load_components
from dataflex.errors import ConfigError
from dataflex.registry import SELECTORS
from dataflex.selectors import RandomSelector


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "components.yaml"
    path.write_text(text)
    return path


def test_shipped_file_loads_and_builds_every_entry():
    comps = load_components()
    assert comps.path == SHIPPED_COMPONENTS
    assert "random" in comps.selector_names()
    raw = yaml.safe_load(SHIPPED_COMPONENTS.read_text())["selectors"]
    assert comps.selector_names() == sorted(raw)
    for key in comps.selector_names():
        sel = comps.build_selector(key)
        assert type(sel) is SELECTORS.get(raw[key]["name"]), key
        for param, value in raw[key]["params"].items():  # every value in the file reaches the selector
            assert getattr(sel.params, param) == value, (key, param)
    assert isinstance(comps.build_selector("random"), RandomSelector)


def test_shipped_file_states_only_overrides_each_with_its_reason():
    """The Params classes are the one source of defaults: the shipped file restates none of them."""
    raw = yaml.safe_load(SHIPPED_COMPONENTS.read_text())["selectors"]
    lines = SHIPPED_COMPONENTS.read_text().splitlines()
    for key, spec in raw.items():
        fields = SELECTORS.get(spec["name"]).Params.model_fields
        entry = lines.index(f"  {key}:")
        for param, value in spec["params"].items():
            assert value != fields[param].default, f"selectors.{key}.params.{param} restates its default"
            line = next(line for line in lines[entry:] if line.strip().startswith(f"{param}:"))
            assert "#" in line, f"selectors.{key}.params.{param}: say why it overrides the default"


def test_valid_file_builds_with_params(tmp_path):
    params = "{seed: 7, repeat_within_round: true}"
    path = write(tmp_path, f"selectors:\n  rnd:\n    name: random\n    params: {params}\n")
    sel = load_components(path).build_selector("rnd")
    assert sel.params.seed == 7
    assert sel.params.repeat_within_round is True


def test_params_may_be_left_out_for_every_selector(tmp_path):
    """Every registered selector, with `params:` left out or empty, builds with its defaults."""
    names = SELECTORS.names()
    lines = ["selectors:"]
    for name in names:
        lines += [f"  {name}_bare:", f"    name: {name}"]
        lines += [f"  {name}_empty:", f"    name: {name}", "    params:"]
    comps = load_components(write(tmp_path, "\n".join(lines) + "\n"))
    for name in names:
        defaults = SELECTORS.get(name).Params()
        for key in (f"{name}_bare", f"{name}_empty"):
            registry_name, params = comps.spec(key)
            assert registry_name == name
            assert params == defaults, key
            assert comps.build_selector(key).params == defaults, key


def test_unused_entry_without_params_does_not_block_another(tmp_path):
    path = write(
        tmp_path, "selectors:\n  less:\n    name: less\n  rnd:\n    name: random\n    params: {seed: 7}\n"
    )
    assert load_components(path).build_selector("rnd").params.seed == 7


# Each bad file maps to the exact message it must give (a regex over the whole message).
BAD_FILES = {
    "misspelled_param": (
        "selectors:\n  rnd:\n    name: random\n    params: {sed: 3}\n",
        r"components\.yaml: selectors\.rnd\.params\.sed: unknown key 'sed'\. Did you mean 'seed'\?",
    ),
    "wrong_type": (
        "selectors:\n  rnd:\n    name: random\n    params: {seed: three}\n",
        r"selectors\.rnd\.params\.seed: Input should be a valid integer.*\(got 'three'\)",
    ),
    "unknown_selector_name": (
        "selectors:\n  rnd:\n    name: randon\n    params: {}\n",
        r"selectors\.rnd\.name: Unknown selector 'randon'\. Did you mean 'random'\?",
    ),
    "missing_name": (
        "selectors:\n  rnd:\n    params: {seed: 3}\n",
        r"components\.yaml: selectors\.rnd\.name: required key is missing\.",
    ),
    "misspelled_top_level": (
        "selector:\n  rnd:\n    name: random\n    params: {}\n",
        r"components\.yaml: selector: unknown key 'selector'\. Did you mean 'selectors'\?",
    ),
    "not_a_mapping": (
        "- random\n- less\n",
        r"components\.yaml: the top level must be a mapping with a 'selectors:' key, got list\.",
    ),
    "empty_file": ("", r"components\.yaml: the file is empty; it needs a top-level 'selectors:' mapping\."),
    "invalid_yaml": ("selectors: [unclosed\n", r"components\.yaml: not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_components_files(tmp_path, case):
    text, message = BAD_FILES[case]
    with pytest.raises(ConfigError, match=message):
        load_components(write(tmp_path, text))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(
        ConfigError, match=r"components file '.*nope\.yaml' does not exist; set components_cfg_file"
    ):
        load_components(missing)


def test_unknown_key_at_build_suggests_keys(tmp_path):
    path = write(tmp_path, "selectors:\n  rnd:\n    name: random\n    params: {}\n")
    with pytest.raises(ConfigError, match=r"no selector 'rn' under 'selectors'\. Did you mean 'rnd'\?"):
        load_components(path).build_selector("rn")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "selectors: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_components(path)

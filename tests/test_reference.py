"""docs/configuration.md's key tables are the schemas, rendered; a stale page fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from dataflex import reference
from dataflex.configs.components import ComponentsFile, ComponentSpec
from dataflex.errors import ConfigError
from dataflex.offline.config import OfflineSelectConfig
from dataflex.registry import get_selector
from dataflex.train.config import ExportConfig, TrainConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_page_is_current():
    current = PAGE.read_text()
    assert reference.splice(current, reference.render()) == current, (
        f"docs/configuration.md is stale; regenerate it with:\n  {reference.COMMAND}"
    )


def _documented_keys(heading: str) -> set[str]:
    """Keys in the tables under ``## heading`` (up to the next ``## ``), read from the page."""
    text = PAGE.read_text().split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w.<>]+)` \|", text, flags=re.M))


@pytest.mark.parametrize(
    ("heading", "schema"),
    [
        ("Training keys", TrainConfig),
        ("Export keys", ExportConfig),
        ("Offline selection keys", OfflineSelectConfig),
    ],
)
def test_page_lists_every_key_of_each_schema(heading, schema):
    assert _documented_keys(heading) == set(schema.model_fields)


def test_page_lists_components_keys_and_every_builtin_selectors_params():
    assert _documented_keys("`components.yaml`") == set(ComponentsFile.model_fields) | {
        f"selectors.<key>.{k}" for k in ComponentSpec.model_fields
    }
    params = PAGE.read_text().split("\n## Selector params", 1)[1]
    for name in ("less", "loss", "random"):
        section = params.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        assert set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M)) == set(
            get_selector(name).Params.model_fields
        )


def test_rows_show_type_default_bounds_and_choices():
    text = PAGE.read_text()
    assert "| `lora_dropout` | float | `0.0` | ≥ 0, < 1 | Dropout on the LoRA input. |" in text
    assert "| `export_device` | str | `cpu` | `cpu`, `auto` |" in text
    assert "| `dataset` | list[str] or comma-separated str | **required** |" in text
    assert (
        "| `eval_strategy` | str | `'no'` | `'no'`, `steps`, `epoch` |" in text
    )  # quoted: YAML reads no as false
    assert "| `components_cfg_file` | str | shipped `dataflex/configs/components.yaml` |" in text
    assert "| `learning_rate` | float | `5.0e-05` | > 0, ≤ 10.0 |" in text


def test_hand_written_prose_is_kept():
    text = PAGE.read_text()
    for heading in ("## How values are checked", "### Rules across keys", "## Environment variables"):
        assert heading in text
    assert text.index("### Rules across keys") < text.index("<!-- BEGIN GENERATED")


def test_field_without_description_is_an_error_naming_it():
    class Undocumented(BaseModel):
        size: int = Field(3, description="How big.")
        colour: str = "red"

    with pytest.raises(ConfigError, match=r"Undocumented\.colour has no description"):
        reference.key_table(Undocumented)


def test_check_fails_on_a_stale_page_with_the_command_and_write_fixes_it(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text(PAGE.read_text().replace("Dropout on the LoRA input.", "Old text."))
    assert reference.main(["--check", str(page)]) == 1
    err = capsys.readouterr().err
    assert "-| `lora_dropout` | float | `0.0` | ≥ 0, < 1 | Old text. |" in err
    assert f"python -m dataflex.reference --write {page}" in err
    assert reference.main(["--write", str(page)]) == 0
    assert page.read_text() == PAGE.read_text()
    assert reference.main(["--check", str(page)]) == 0


def test_page_without_markers_is_refused(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text("# no markers\n")
    with pytest.raises(ConfigError, match="BEGIN GENERATED"):
        reference.main(["--write", str(page)])

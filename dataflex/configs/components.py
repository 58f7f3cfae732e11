"""``components.yaml``: named, validated selector specs a training config refers to.

Shape (the seed guide's)::

    selectors:
      less:                 # the key a training config names (component_name: less)
        name: less          # registry name of the selector class
        params:             # validated by that class's strict Params model; optional
          proj_dim: 4096    # (left out or empty: every param takes its default)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dataflex.configs.validation import format_validation_error
from dataflex.configs.yaml_files import load_yaml_text, refuse_bools_for_numbers
from dataflex.errors import ConfigError, RegistryError, did_you_mean
from dataflex.io import read_user_text
from dataflex.registry import SELECTORS

if TYPE_CHECKING:
    from dataflex.selectors.base import Selector

SHIPPED_COMPONENTS = Path(__file__).with_name("components.yaml")

#: How a selector of one's own gets registered (appended to an unknown-selector message).
CUSTOM_SELECTOR_HINT = (
    "A selector of your own is registered when the module defining it is imported: list that module "
    "under plugins: in the training config (plugins: [my_selectors] for a module on PYTHONPATH, or "
    "plugins: [my_selectors.py] for a file), or import it before this file is loaded from Python."
)


class ComponentSpec(BaseModel):
    """One component: the registry ``name`` of its class and its ``params``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registry name of the selector class (`dataflex-cli list selectors`).")
    params: dict[str, Any] | None = Field(
        default_factory=dict,
        description="Arguments of that selector, validated by its strict `Params` model (below); "
        "optional: left out (or empty), every param takes its default.",
    )


class ComponentsFile(BaseModel):
    """The top level of ``components.yaml``."""

    model_config = ConfigDict(extra="forbid")

    selectors: dict[str, ComponentSpec] = Field(
        default_factory=dict, description="Key (what `component_name` names) → selector spec."
    )


class Components:
    """A loaded, fully validated ``components.yaml``.

    Attributes:
        path: The file it came from.
        selectors: Key → (registry name, validated Params instance).
    """

    def __init__(self, path: Path, selectors: dict[str, tuple[str, BaseModel]]) -> None:
        self.path = path
        self.selectors = selectors

    def selector_names(self) -> list[str]:
        """The selector keys defined in the file."""
        return sorted(self.selectors)

    def spec(self, key: str) -> tuple[str, BaseModel]:
        """The registry name and validated params of ``selectors.<key>``.

        Raises:
            ConfigError: if ``key`` is not in the file (closest keys suggested).
        """
        if key not in self.selectors:
            raise ConfigError(
                f"{self.path}: no selector {key!r} under 'selectors'."
                + did_you_mean(key, self.selector_names())
            )
        return self.selectors[key]

    def build_selector(self, key: str) -> Selector:
        """Instantiate the selector configured under ``selectors.<key>``.

        Raises:
            ConfigError: if ``key`` is not in the file (closest keys suggested).
        """
        name, params = self.spec(key)
        return SELECTORS.get(name)(params)


def load_components(path: str | Path | None = None) -> Components:
    """Load and validate a ``components.yaml`` (the shipped one when ``path`` is None).

    Every entry is checked before anything is built: the file parses as a mapping,
    keys are known, every ``name`` is a registered selector, and every ``params``
    validates against that selector's strict ``Params`` model.

    Raises:
        ConfigError: naming the file, the key path, the bad value and the closest
            valid choice.
    """
    path = Path(path) if path is not None else SHIPPED_COMPONENTS
    if not path.exists():
        raise ConfigError(
            f"components file {str(path)!r} does not exist; set components_cfg_file to an "
            f"existing YAML file (the shipped one is {SHIPPED_COMPONENTS})."
        )
    raw = load_yaml_text(read_user_text(path, "components file"), path)
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it needs a top-level 'selectors:' mapping.")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping with a 'selectors:' key, got {type(raw).__name__}."
        )
    try:
        parsed = ComponentsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ComponentsFile, where=str(path) + ":")) from None

    selectors: dict[str, tuple[str, BaseModel]] = {}
    for key, spec in parsed.selectors.items():
        where = f"{path}: selectors.{key}"
        try:
            cls = SELECTORS.get(spec.name)
        except RegistryError as exc:
            raise ConfigError(f"{where}.name: {exc} {CUSTOM_SELECTOR_HINT}") from None
        params = spec.params or {}  # `params:` left out, or written with nothing under it
        refuse_bools_for_numbers(cls.Params, params, f"{where}.params:")
        selectors[key] = (spec.name, cls.validate_params(params, where=f"{where}.params"))
    return Components(path, selectors)

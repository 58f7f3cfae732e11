"""Every shipped selector's params are strict: text is never a number, a float never an integer,
a float key takes only finite values; valid YAML (an integer for a float, ``1e-4``) still works."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import yaml

from dataflex.errors import ConfigError
from dataflex.registry import SELECTORS, get_selector
from dataflex.selectors.base import Selector, SelectorParams


def _fields(name: str, kind: type) -> list[tuple[str, str]]:
    """``(selector, key)`` of each ``kind`` key (``int``, ``int | None``...) of selector ``name``."""
    out = []
    for key, info in get_selector(name).Params.model_fields.items():
        args = set(get_args(info.annotation)) or {info.annotation}
        if kind in args and str not in args and bool not in args:
            out.append((name, key))
    return out


INT_KEYS = [f for n in SELECTORS.names() for f in _fields(n, int)]
FLOAT_KEYS = [f for n in SELECTORS.names() for f in _fields(n, float)]


def test_every_selector_has_number_keys_to_check():
    assert len({n for n, _ in INT_KEYS}) == len(SELECTORS.names())  # batch_size, seed, ... everywhere
    assert ("less", "proj_dim") in INT_KEYS and ("less", "candidate_fraction") in FLOAT_KEYS


@pytest.mark.parametrize(("name", "key"), INT_KEYS)
def test_integer_keys_refuse_text_and_floats(name, key):
    cls = get_selector(name)
    with pytest.raises(ConfigError, match=f"{key}: expected an integer, got the text '3'"):
        cls.validate_params({key: "3"})
    with pytest.raises(ConfigError, match=f"{key}: Input should be a valid integer"):
        cls.validate_params({key: 3.0})


@pytest.mark.parametrize(("name", "key"), FLOAT_KEYS)
def test_float_keys_refuse_text_and_non_finite_values(name, key):
    cls = get_selector(name)
    with pytest.raises(ConfigError, match=f"{key}: expected a number, got the text '0.5'"):
        cls.validate_params({key: "0.5"})
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ConfigError, match=f"{key}: expected a finite number"):
            cls.validate_params({key: value})


def test_valid_yaml_numbers_still_work():
    # PyYAML reads 1e-1 as text (YAML 1.1 needs a dot); an integer is a valid float
    raw = yaml.safe_load("candidate_fraction: 1e-1\nproj_dim: 16\n")
    assert raw["candidate_fraction"] == "1e-1"
    params = get_selector("less").validate_params(raw)
    assert params.candidate_fraction == 0.1 and params.proj_dim == 16
    assert get_selector("less").validate_params({"candidate_fraction": 1}).candidate_fraction == 1.0
    with pytest.raises(ConfigError, match="candidate_fraction: Input should be a valid number"):
        get_selector("less").validate_params({"candidate_fraction": "1e-1x"})


def test_a_users_selector_params_are_strict_too():
    class Mine(Selector):
        class Params(SelectorParams):
            temperature: float = 1.0
            top_k: int = 4

        def select(self, ctx, num_samples):  # pragma: no cover - never called
            raise NotImplementedError

    with pytest.raises(ConfigError, match="top_k: expected an integer, got the text '512'"):
        Mine.validate_params({"top_k": "512"})
    with pytest.raises(ConfigError, match="temperature: expected a finite number"):
        Mine(temperature=math.inf)
    assert Mine(temperature=2, top_k=8).params.temperature == 2.0

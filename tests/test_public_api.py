"""The public surface: what ``import dataflex`` offers, and that it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import dataflex
import dataflex.gradients
import dataflex.selectors
import dataflex.train.dynamic
from dataflex.registry import build_selector, list_selectors, register_selector
from dataflex.selectors.base import Selector
from dataflex.selectors.pool import PoolParams, PoolSelector
from dataflex.train.dynamic.trainer import DynamicSelectTrainer


def test_top_level_names_are_the_real_objects():
    assert dataflex.DynamicSelectTrainer is DynamicSelectTrainer
    assert dataflex.Selector is Selector
    assert (dataflex.register_selector, dataflex.build_selector, dataflex.list_selectors) == (
        register_selector,
        build_selector,
        list_selectors,
    )
    for name in dataflex.__all__:
        assert getattr(dataflex, name) is not None, name
    assert (dataflex.selectors.PoolSelector, dataflex.selectors.PoolParams) == (PoolSelector, PoolParams)


def test_subpackages_do_not_export_plumbing():
    for module, names in [
        (dataflex.train.dynamic, ["check_dynamic_config", "selector_from_components", "check_dynamic_plan"]),
        (dataflex.gradients, ["FeaturePlan", "fingerprint_key"]),  # the one key lives in dataflex.io
    ]:
        for name in names:
            assert not hasattr(module, name), (module.__name__, name)


def test_import_dataflex_does_not_import_torch():
    code = "import sys, dataflex; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

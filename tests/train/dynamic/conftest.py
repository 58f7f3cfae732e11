"""The test selectors are registered only while this folder's test modules run."""

from __future__ import annotations

import pytest
from dyn_helpers import register_test_selectors, unregister_test_selectors


@pytest.fixture(scope="module", autouse=True)
def test_selectors_registered():
    register_test_selectors()
    yield
    unregister_test_selectors()

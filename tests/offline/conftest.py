"""Offline-selection tests: one intra-op thread, as in the selector tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: CI runs two pytest workers on two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

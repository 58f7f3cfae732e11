"""Helpers for selector tests: a selection context over a tiny Llama."""

from __future__ import annotations

import pytest

from dataflex.data.collator import SFTDataCollator
from dataflex.selectors.base import SelectionContext


def make_ctx(model, train, eval_=None, **kw) -> SelectionContext:
    """A single-process context with the right-padding collator."""
    kw.setdefault("collator", SFTDataCollator(pad_token_id=0))
    return SelectionContext(
        model=model, optimizer=kw.pop("optimizer", None), train_dataset=train, eval_dataset=eval_, **kw
    )


@pytest.fixture
def ctx_factory():
    return make_ctx


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: CI runs two pytest workers on two cores, and oversubscribed
    BLAS threads make these small matmuls many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

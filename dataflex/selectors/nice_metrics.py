"""The metrics ``nice`` scores generations with, in a small registry of their own.

A metric is a callable ``metric(prediction, reference, example) -> float``:

* ``prediction``: the generated token ids, without the end-of-sequence token;
* ``reference``: the validation example's completion token ids, without a trailing
  end-of-sequence token;
* ``example``: the validation example itself (``input_ids``, ``labels`` and any
  metadata the data pipeline kept), for metrics that need more (a tokenizer's
  decoded text, a reward model's view of the prompt).

Register one with :func:`register_metric` and name it in ``nice``'s ``metric``
param. The built-ins compare token ids (no tokenizer needed): ``exact_match`` and
``rouge_l`` (ROUGE-L F1 over the longest common subsequence of tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dataflex.registry import Registry

Metric = Callable[[Sequence[int], Sequence[int], Mapping[str, Any]], float]

METRICS: Registry[Any] = Registry("metric")
"""Metrics by name; ``nice``'s ``metric`` param is validated against it."""


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """Decorator registering a metric callable under ``name``.

    Example::

        @register_metric("answer_length_ok")
        def answer_length_ok(prediction, reference, example):
            return float(abs(len(prediction) - len(reference)) <= 2)
    """
    return METRICS.register(name)


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``.

    Raises:
        RegistryError: for an unregistered name, naming the closest registered ones.
    """
    return METRICS.get(name)


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (dynamic programming, O(|a|·|b|))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


@register_metric("rouge_l")
def rouge_l(prediction: Sequence[int], reference: Sequence[int], example: Mapping[str, Any]) -> float:
    """ROUGE-L F1 (Lin, 2004; β = 1) over tokens.

    2PR / (P + R) with P = LCS/|prediction| and R = LCS/|reference|; 0 when either
    side is empty or nothing is shared.
    """
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


@register_metric("exact_match")
def exact_match(prediction: Sequence[int], reference: Sequence[int], example: Mapping[str, Any]) -> float:
    """1.0 when the generated tokens equal the reference completion, else 0.0."""
    return float(list(prediction) == list(reference))

"""The one composition helper every report uses (training data, rounds, offline selection)."""

from __future__ import annotations

from dataflex.data.sft_dataset import SFTDataset, composition


def test_counts_the_chosen_examples_by_value():
    exs = [{"dataset": "a"}, {"dataset": "b"}, {"dataset": "a"}]
    assert composition(exs, [0, 2, 1, 0]) == {"a": 3, "b": 1}
    assert composition(exs) == {"a": 2, "b": 1}
    assert SFTDataset(exs).composition() == {"a": 2, "b": 1}


def test_missing_field_rules():
    assert composition([{}, {}], [0, 1]) is None  # the data has no such metadata
    assert composition([{"dataset": "a"}], []) == {}
    # one example without the field among others is counted, wherever it is
    mixed = [{"subtask": None}, {"subtask": "x"}, {}]
    assert composition(mixed, [0, 1, 2], key="subtask") == {"?": 2, "x": 1}
    assert composition(mixed, [1, 2], key="subtask") == {"?": 1, "x": 1}

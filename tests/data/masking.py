"""An independent check of prompt masking: decode the trained spans and the whole example."""

from __future__ import annotations

from dataflex.data.collator import IGNORE_INDEX


def label_spans(labels: list[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of positions whose label is not IGNORE_INDEX."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def assert_masked_exactly(tokenised: dict, pairs: list[tuple[str, str]], tokenizer) -> None:
    """Labels are -100 on exactly the prompt positions: decoded spans are the answers, in order."""
    ids, labels = tokenised["input_ids"], tokenised["labels"]
    assert len(ids) == len(labels)
    decode = lambda xs: tokenizer.decode(xs, skip_special_tokens=False)  # noqa: E731
    assert decode(ids) == "".join(s + t for s, t in pairs)
    for i, label in enumerate(labels):
        assert label in (IGNORE_INDEX, ids[i])
    spans = label_spans(labels)
    assert [decode(ids[a:b]) for a, b in spans] == [t for _, t in pairs]
    prompts = [decode(ids[b0:a1]) for (_, b0), (a1, _) in zip([(0, 0), *spans], spans)]
    assert prompts == [s for s, _ in pairs]

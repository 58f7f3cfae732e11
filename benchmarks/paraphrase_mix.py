"""The ``paraphrase`` setting's data: seven task families, paraphrased instructions, a near miss.

A harder mixture than the quickstart's (docs/benchmarks.md, "Selection quality on a
paraphrased mixture"):

* seven task families in the Alpaca format, each with **four instruction
  paraphrases** in the pool;
* the target family, ``uppercase``, is 64 of the 724 pool rows (8.8%);
* its validation rows use **three further phrasings** and its held-out test rows
  three more, none of which occurs in the pool (nor in the other split); 128
  validation rows are drawn, the benchmark scores against the first 32 (or 8, or
  all 128, in the LESS variants that vary it);
* a **near-miss** family, ``reverse_order``, shares the target's input (2-4
  lower-case words from the same list) and the wording of its instructions
  ("Rewrite the words in ...", "Write these words in ...") but asks for a
  different answer (the same words, last first). It is 160 rows, 2.5x the target.

Everything is drawn from one seeded :class:`random.Random`, so the same seed writes
the same rows. :func:`make_splits` is pure (no files); the setting in
``benchmarks/quality_settings.py`` writes its output.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from examples.quickstart.make_quickstart import CAPITALS, COLORS, NEGATIVE, POSITIVE, THINGS, WORDS

TARGET = "uppercase"
NEAR_MISS = "reverse_order"

# family -> split -> phrasings. Only the target has validation and test phrasings:
# the other families occur in the pool alone.
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "uppercase": {
        "pool": (
            "Rewrite the words in capital letters.",
            "Write these words in upper case.",
            "Change the words below to uppercase.",
            "Put every letter of the words in capitals.",
        ),
        "valid": (
            "Convert the following words to capital letters.",
            "Turn these words into uppercase.",
            "Make each letter of the words below a capital.",
        ),
        "test": (
            "Transform the words into upper case letters.",
            "Rewrite the following words using only capitals.",
            "Spell the words below in uppercase.",
        ),
    },
    "reverse_order": {
        "pool": (
            "Rewrite the words in reverse order.",
            "Write these words in backward order.",
            "Change the words below to the opposite order.",
            "Put the last of the words first and the first last.",
        ),
    },
    "reverse_letters": {
        "pool": (
            "Reverse the letters of the word.",
            "Spell this word backwards.",
            "Write the word with its letters in reverse.",
            "What is this word spelled from the end?",
        ),
    },
    "sort": {
        "pool": (
            "Sort the numbers from smallest to largest.",
            "Put these numbers in ascending order.",
            "Arrange the numbers below from low to high.",
            "List the numbers in increasing order.",
        ),
    },
    "sentiment": {
        "pool": (
            "Is this review positive or negative?",
            "Classify the sentiment of the review.",
            "Does this review sound positive or negative?",
            "Tell whether the review is positive or negative.",
        ),
    },
    "capital": {
        "pool": (
            "What is the capital of {x}?",
            "Name the capital city of {x}.",
            "Which city is the capital of {x}?",
            "Tell me the capital of {x}.",
        ),
    },
    "color": {
        "pool": (
            "What color is {x}?",
            "Name the color of {x}.",
            "Which colour is {x}?",
            "Tell me what color {x} is.",
        ),
    },
}

# rows of each family in the pool: target 8.8%, the near miss 2.5x the target.
POOL_COUNTS = {
    "uppercase": 64,
    "reverse_order": 160,
    "reverse_letters": 100,
    "sort": 100,
    "sentiment": 100,
    "capital": 100,
    "color": 100,
}
N_VALID, N_TEST = 128, 96  # the benchmark validates on the first 32 valid rows by default


def _words(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(2, 4)))


def _uppercase(rng: random.Random) -> tuple[str, str, str]:
    s = _words(rng)
    return "", s, s.upper()


def _reverse_order(rng: random.Random) -> tuple[str, str, str]:
    s = _words(rng)
    return "", s, " ".join(reversed(s.split()))


def _reverse_letters(rng: random.Random) -> tuple[str, str, str]:
    w = rng.choice(WORDS)
    return "", w, w[::-1]


def _sort(rng: random.Random) -> tuple[str, str, str]:
    xs = [rng.randint(0, 50) for _ in range(rng.randint(3, 5))]
    return "", ", ".join(map(str, xs)), ", ".join(map(str, sorted(xs)))


def _sentiment(rng: random.Random) -> tuple[str, str, str]:
    good = rng.random() < 0.5
    text = f"The {rng.choice(THINGS)} was {rng.choice(POSITIVE if good else NEGATIVE)}."
    return "", text, "positive" if good else "negative"


def _capital(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    return country, "", f"The capital of {country} is {CAPITALS[country]}."


def _color(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(sorted(COLORS))
    article = "the " if thing in ("sky", "grass", "snow") else "a "
    return article + thing, "", COLORS[thing]


# family -> rng -> (slot of the phrasing's {x}, input, output)
FAMILIES: dict[str, Callable[[random.Random], tuple[str, str, str]]] = {
    "uppercase": _uppercase,
    "reverse_order": _reverse_order,
    "reverse_letters": _reverse_letters,
    "sort": _sort,
    "sentiment": _sentiment,
    "capital": _capital,
    "color": _color,
}


def make_row(family: str, split: str, rng: random.Random) -> dict[str, str]:
    """One Alpaca row of ``family`` with a phrasing of ``split`` (``task``: family, ``phrasing``: its id)."""
    phrasings = PHRASINGS[family][split]
    k = rng.randrange(len(phrasings))
    slot, inp, out = FAMILIES[family](rng)
    return {
        "instruction": phrasings[k].format(x=slot),
        "input": inp,
        "output": out,
        "task": family,
        "phrasing": f"{split}{k}",
    }


def make_splits(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """The pool (shuffled), the target's validation and test rows, from one seeded draw.

    Validation and test inputs are never a target input of the pool, and no row's
    (instruction, input) occurs twice across the three splits.
    """
    rng = random.Random(seed)
    pool = [make_row(f, "pool", rng) for f, n in POOL_COUNTS.items() for _ in range(n)]
    rng.shuffle(pool)
    seen_inputs = {r["input"] for r in pool if r["task"] == TARGET}
    held: dict[str, list[dict[str, str]]] = {}
    for split, n in (("valid", N_VALID), ("test", N_TEST)):
        rows: list[dict[str, str]] = []
        while len(rows) < n:
            row = make_row(TARGET, split, rng)
            if row["input"] not in seen_inputs:
                seen_inputs.add(row["input"])
                rows.append(row)
        held[split] = rows
    return {"pool": pool, **held}


def all_phrasings() -> list[str]:
    """Every phrasing of every family and split (with ``{x}`` left in), for the tokenizer corpus."""
    return [p for splits in PHRASINGS.values() for ps in splits.values() for p in ps]

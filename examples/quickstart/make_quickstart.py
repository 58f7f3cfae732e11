"""Generate the offline quickstart: a synthetic instruction dataset, a BPE tokenizer and a tiny Llama.

Run from the repository root (it rewrites ``examples/quickstart/data`` and
``examples/quickstart/model`` and is deterministic)::

    python examples/quickstart/make_quickstart.py

Data: seven clearly different task families in Alpaca format (``task`` column =
family). The train pool mixes all of them (150 rows each); the target task is
``uppercase`` (rewrite 2-4 words in capitals), one a tiny model can learn in a few
dozen steps (the selection-quality benchmark, docs/benchmarks.md): ``valid`` is a small
target-task validation split (the ``eval_dataset`` of the LESS config) and ``test`` a
held-out target-task split, both fresh rows that are not in the pool.

Model: a 2-layer Llama (hidden 128, ~0.5M parameters) with a byte-level BPE tokenizer
trained on the data and a ChatML chat template, **briefly pre-trained** on the pool
(``--pretrain-steps`` full fine-tuning steps through ``dataflex.train``'s own code
path), so that the per-example gradients LESS compares mean something. The weights
are saved in float32 (~1.7 MB). Same torch version and thread count → same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORDS = [
    "apple",
    "river",
    "stone",
    "garden",
    "window",
    "purple",
    "rocket",
    "silver",
    "forest",
    "candle",
    "planet",
    "music",
    "yellow",
    "bridge",
    "ocean",
    "tiger",
    "pencil",
    "cloud",
    "winter",
    "summer",
    "orange",
    "castle",
    "dragon",
    "island",
    "market",
    "rabbit",
    "paper",
    "mirror",
    "butter",
    "guitar",
    "violin",
    "lemon",
    "pepper",
    "tomato",
    "carpet",
    "button",
]
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Canada": "Ottawa",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Greece": "Athens",
    "Poland": "Warsaw",
    "Cuba": "Havana",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Portugal": "Lisbon",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Germany": "Berlin",
    "Russia": "Moscow",
    "China": "Beijing",
    "India": "New Delhi",
    "Brazil": "Brasilia",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
}
POSITIVE = ["great", "wonderful", "lovely", "excellent", "amazing", "delightful", "superb", "fantastic"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "poor", "disappointing", "bad"]
THINGS = ["food", "service", "movie", "hotel", "book", "concert", "game", "phone"]
COLORS = {
    "apple": "red",
    "banana": "yellow",
    "grass": "green",
    "sky": "blue",
    "snow": "white",
    "coal": "black",
    "orange": "orange",
    "lemon": "yellow",
    "tomato": "red",
    "cloud": "white",
}


def arithmetic(rng: random.Random) -> dict:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if rng.random() < 0.5:
        return {"instruction": "Add the two numbers.", "input": f"{a} + {b}", "output": str(a + b)}
    a, b = max(a, b), min(a, b)
    return {
        "instruction": "Subtract the second number from the first.",
        "input": f"{a} - {b}",
        "output": str(a - b),
    }


def reverse(rng: random.Random) -> dict:
    w = rng.choice(WORDS)
    return {"instruction": "Reverse the letters of the word.", "input": w, "output": w[::-1]}


def uppercase(rng: random.Random) -> dict:
    s = " ".join(rng.sample(WORDS, rng.randint(2, 4)))
    return {"instruction": "Rewrite the words in capital letters.", "input": s, "output": s.upper()}


def sort_numbers(rng: random.Random) -> dict:
    xs = [rng.randint(0, 50) for _ in range(rng.randint(3, 5))]
    return {
        "instruction": "Sort the numbers from smallest to largest.",
        "input": ", ".join(map(str, xs)),
        "output": ", ".join(map(str, sorted(xs))),
    }


def capital(rng: random.Random) -> dict:
    country = rng.choice(sorted(CAPITALS))
    return {
        "instruction": f"What is the capital of {country}?",
        "input": "",
        "output": f"The capital of {country} is {CAPITALS[country]}.",
    }


def sentiment(rng: random.Random) -> dict:
    good = rng.random() < 0.5
    word = rng.choice(POSITIVE if good else NEGATIVE)
    text = f"The {rng.choice(THINGS)} was {word}."
    return {
        "instruction": "Is this review positive or negative?",
        "input": text,
        "output": "positive" if good else "negative",
    }


def color(rng: random.Random) -> dict:
    thing = rng.choice(sorted(COLORS))
    return {
        "instruction": f"What color is {'the ' if thing in ('sky', 'grass', 'snow') else 'a '}{thing}?",
        "input": "",
        "output": COLORS[thing],
    }


FAMILIES = {
    "arithmetic": arithmetic,
    "reverse": reverse,
    "uppercase": uppercase,
    "sort": sort_numbers,
    "capital": capital,
    "sentiment": sentiment,
    "color": color,
}
TARGET = "uppercase"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Tokens of every named template, so the quickstart tokenizer works with all of them.
SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def make_rows(family: str, n: int, rng: random.Random) -> list[dict]:
    return [{**FAMILIES[family](rng), "task": family} for _ in range(n)]


def make_data(out: Path, per_family: int, n_valid: int, n_test: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    pool = [row for family in FAMILIES for row in make_rows(family, per_family, rng)]
    rng.shuffle(pool)
    seen = {(r["instruction"], r["input"]) for r in pool}
    held_out = []
    while len(held_out) < n_valid + n_test:  # target-task rows that are not in the pool
        row = make_rows(TARGET, 1, rng)[0]
        if (row["instruction"], row["input"]) not in seen:
            seen.add((row["instruction"], row["input"]))
            held_out.append(row)
    splits = {"train": pool, "valid": held_out[:n_valid], "test": held_out[n_valid:]}
    out.mkdir(parents=True, exist_ok=True)
    columns = {"prompt": "instruction", "query": "input", "response": "output", "subtask": "task"}
    info = {f"quickstart_{name}": {"file_name": f"{name}.json", "columns": columns} for name in splits}
    for name, rows in splits.items():
        (out / f"{name}.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return splits


def make_tokenizer(rows: list[dict], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    corpus += ["user", "assistant", "system", "Below is an instruction that describes a task."]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def make_model(tokenizer, out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=32,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def pretrain(model_dir: Path, data_dir: Path, steps: int, seed: int) -> None:
    """Full fine-tuning of the random-init model in ``model_dir`` on the pool, in place.

    Runs ``dataflex-cli train``'s code path (:func:`dataflex.train.runner.run_train`) and
    keeps only the trained weights (config and tokenizer are those of ``make_model``).
    """
    import shutil
    import tempfile

    from dataflex.train.config import load_train_config
    from dataflex.train.runner import run_train

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pretrain"
        cfg = load_train_config(
            None,
            [
                f"model_name_or_path={model_dir}",
                "finetuning_type=full",
                "dataset=quickstart_train",
                f"dataset_dir={data_dir}",
                "template=tokenizer",
                "cutoff_len=128",
                f"output_dir={out}",
                "per_device_train_batch_size=16",
                "learning_rate=3e-3",
                "lr_scheduler_type=cosine",
                "warmup_ratio=0.1",
                f"max_steps={steps}",
                f"save_steps={steps * 10}",
                f"logging_steps={max(1, steps // 4)}",
                "report_to=none",
                f"seed={seed}",
            ],
        )
        run_train(cfg)
        shutil.copy2(out / "model.safetensors", model_dir / "model.safetensors")  # config unchanged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--per-family", type=int, default=150)
    parser.add_argument("--valid", type=int, default=32)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=120, help="0: keep the random init")
    args = parser.parse_args()
    splits = make_data(args.out / "data", args.per_family, args.valid, args.test, args.seed)
    tokenizer = make_tokenizer(splits["train"], args.vocab_size)
    make_model(tokenizer, args.out / "model", args.seed)
    if args.pretrain_steps:
        pretrain(args.out / "model", args.out / "data", args.pretrain_steps, args.seed)
    sizes = {k: len(v) for k, v in splits.items()}
    print(f"wrote {args.out / 'data'} {sizes} and {args.out / 'model'} (vocab {len(tokenizer)})")


if __name__ == "__main__":
    main()

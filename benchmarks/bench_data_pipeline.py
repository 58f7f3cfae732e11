"""Data pipeline and quickstart speed: tokenisation workers, and torch threads for the tiny model.

Run from the repository root (needs ../shared/data/llamafactory beside the checkout):

    python -m benchmarks.bench_data_pipeline

Prints two tables; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dataflex.data import SFTDataCollator, get_template, load_dataset_examples, tokenize_examples

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "llamafactory"
MODEL = ROOT / "examples" / "quickstart" / "model"


def bench_tokenize(repeats: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    examples = load_dataset_examples("alpaca_en_demo,alpaca_zh_demo,glaive_toolcall_en_demo", SHARED)
    template = get_template("llama3")
    rows = []
    for workers in (1, 2):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out, _ = tokenize_examples(examples, tokenizer, template, cutoff_len=1024, num_workers=workers)
            best = min(best, time.perf_counter() - start)
        rows.append((workers, best, len(out)))
    base = rows[0][1]
    print(f"\ntokenise {rows[0][2]} demo examples (llama3 template, cutoff_len 1024), best of {repeats}")
    print(f"{'workers':>8} {'seconds':>9} {'examples/s':>11} {'speed-up':>9}")
    for workers, sec, n in rows:
        print(f"{workers:>8} {sec:>9.2f} {n / sec:>11.0f} {base / sec:>8.2f}x")


def bench_threads(steps: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    examples = load_dataset_examples(
        "quickstart_train", ROOT / "examples" / "quickstart" / "data", max_samples=16
    )
    tokenised, _ = tokenize_examples(examples, tokenizer, get_template(None, tokenizer), cutoff_len=128)
    batch = SFTDataCollator(tokenizer.pad_token_id)(tokenised)
    before = torch.get_num_threads()
    rows = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(MODEL)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        for _ in range(steps + 2):
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - start)
        times = sorted(times[2:])  # drop warm-up steps
        rows.append((threads, times[len(times) // 2]))
    torch.set_num_threads(before)
    base = rows[0][1]
    print(f"\nquickstart model, one optimizer step on a batch of 16 (median of {steps})")
    print(f"{'threads':>8} {'ms/step':>9} {'speed-up':>9}")
    for threads, sec in rows:
        print(f"{threads:>8} {1000 * sec:>9.1f} {base / sec:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads")
    bench_tokenize(args.repeats)
    bench_threads(args.steps)


if __name__ == "__main__":
    main()

"""Per-example gradient features: a LESS-style loop vs dataflex vs a plain training pass.

Same model, same examples, same projector, side by side in one run on CPU:

  (a) LESS-style loop: batch 1, loss.backward(), flatten .grad, Adam transform, project every 16
  (b) dataflex.gradients (FeaturePlan.features, what compute_features runs per batch)
  (c) plain batched forward + backward of the same batches, no per-example work (a lower bound)

Timing: the three run interleaved batch by batch in one process, so that load from other
processes on a shared machine falls on all of them alike. Memory: each variant runs on the
first two batches in its own fresh process; its peak is the largest resident set size above
the size after setup, sampled every 2 ms. Prints a table; asserts nothing about time.

    python benchmarks/gradients.py                      # the issue's setting (512 examples)
    python benchmarks/gradients.py --examples 64        # a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import threading
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--tokens", type=int, default=128, help="mean sequence length (±16)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--proj-dim", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--variants", default="c,b,a")
    return p.parse_args()


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` is the largest value seen."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def setup(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from dataflex.data.collator import SFTDataCollator
    from dataflex.gradients import AdamMoments, AdamState, num_trainable
    from dataflex.projectors.base import Projector

    class DenseGaussian(Projector):
        registry_name = "bench-dense"

        def __init__(self, input_dim: int, proj_dim: int, seed: int) -> None:
            super().__init__(input_dim, proj_dim, seed=seed)
            gen = torch.Generator().manual_seed(seed)
            self.matrix = torch.randn(proj_dim, input_dim, generator=gen) / proj_dim**0.5

        def _project(self, x, offset):
            return x.float() @ self.matrix[:, offset : offset + x.shape[1]].T

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    )
    rng = random.Random(0)
    data = []
    for _ in range(args.examples):
        n = rng.randint(args.tokens - 16, args.tokens + 16)
        ids = [rng.randrange(3, args.vocab) for _ in range(n)]
        prompt = rng.randint(16, 48)
        data.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    collate = SFTDataCollator(pad_token_id=0)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # as after some training: lora_B no longer zero, Adam moments present
        for n, p in trainable:
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    state = AdamState(
        {
            n: AdamMoments(
                torch.randn(p.shape, generator=gen) * 1e-4,
                torch.rand(p.shape, generator=gen) * 1e-8,
                0.9,
                0.999,
                1e-8,
            )
            for n, p in trainable
        }
    )
    model.eval()
    projector = DenseGaussian(num_trainable(model), args.proj_dim, seed=1)
    return model, data, collate, projector, state


def less_loop(model, batch_examples, collate, projector, state, plan):
    """(a) What LESS and DataFlex do: one example at a time, flatten, Adam, project every 16."""
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    first = state[trainable[0][0]]
    out, buf = [], []
    for ex in batch_examples:
        model.zero_grad(set_to_none=True)
        model(**collate([ex])).loss.backward()
        g = torch.cat([p.grad.view(-1) for _, p in trainable])
        m = first.beta1 * plan.m_all + (1 - first.beta1) * g
        v = first.beta2 * plan.v_all + (1 - first.beta2) * g * g
        buf.append(m / (v.sqrt() + first.eps))
        if len(buf) == 16:
            out.append(projector.project(torch.stack(buf)))
            buf = []
    if buf:
        out.append(projector.project(torch.stack(buf)))
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def ours(model, batch_examples, collate, projector, state, plan):
    """(b) dataflex: one forward and one autograd.grad per batch, streamed into the projector."""
    return plan.features(collate(batch_examples))


def plain(model, batch_examples, collate, projector, state, plan):
    """(c) A plain batched forward + backward of the same batch: no per-example work at all."""
    model.zero_grad(set_to_none=True)
    model(**collate(batch_examples)).loss.backward()
    model.zero_grad(set_to_none=True)
    return None


def make_plan(model, projector, state):
    """The FeaturePlan of (b); (a) gets LESS's flattened moments, prepared once as LESS does."""
    import torch

    from dataflex.gradients import FeaturePlan

    plan = FeaturePlan(model, transform="adam", projector=projector, adam_state=state)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    plan.m_all = torch.cat([state[n].exp_avg.flatten() for n in names])
    plan.v_all = torch.cat([state[n].exp_avg_sq.flatten() for n in names])
    return plan


VARIANTS = {
    "a": ("(a) LESS-style loop", less_loop),
    "b": ("(b) dataflex batched", ours),
    "c": ("(c) plain fwd+bwd", plain),
}


def batches(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


def memory_child(key: str, args: argparse.Namespace, queue) -> None:
    model, data, collate, projector, state = setup(args)
    plan = make_plan(model, projector, state)
    fn = VARIANTS[key][1]
    with PeakRSS() as mem:
        for chunk in batches(data, args.batch_size)[:2]:
            fn(model, chunk, collate, projector, state, plan)
    queue.put(mem.peak - mem.base)


def peak_memory(key: str, args: argparse.Namespace) -> int:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=memory_child, args=(key, args, queue))
    proc.start()
    peak = queue.get()
    proc.join()
    return peak


def timings(args: argparse.Namespace, keys: list[str]) -> tuple[dict, dict]:
    model, data, collate, projector, state = setup(args)
    plan = make_plan(model, projector, state)
    seconds = dict.fromkeys(keys, 0.0)
    feats: dict = {k: [] for k in keys}
    for i, chunk in enumerate(batches(data, args.batch_size)):
        for key in keys:
            start = time.perf_counter()
            out = VARIANTS[key][1](model, chunk, collate, projector, state, plan)
            seconds[key] += time.perf_counter() - start
            if out is not None:
                feats[key].append(out.numpy())
        done = (i + 1) * args.batch_size
        print(
            f"  {min(done, len(data))}/{len(data)}: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
        )
    return seconds, {k: np.concatenate(v) for k, v in feats.items() if v}


def main() -> None:
    args = parse_args()
    import peft
    import torch
    import transformers

    keys = args.variants.split(",")
    seconds, feats = timings(args, keys)
    memory = {k: peak_memory(k, args) for k in keys}
    results = {k: (None, seconds[k], memory[k], feats.get(k)) for k in keys}
    print()
    print(
        f"Llama hidden 256, 4 layers, vocab {args.vocab}, LoRA r=16 on all linear layers; "
        f"{args.examples} examples of {args.tokens}±16 tokens, batch {args.batch_size}, "
        f"Adam transform, dense Gaussian projection to {args.proj_dim}; CPU, {args.threads} threads"
    )
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs visible"
    )
    print()
    print("| variant | time (s) | examples/s | time vs (b) | peak extra memory (MiB) | memory vs (b) |")
    print("|---|---:|---:|---:|---:|---:|")
    b_time = results["b"][1] if "b" in results else None
    b_mem = results["b"][2] if "b" in results else None
    for key in "abc":
        if key not in results:
            continue
        _, sec, mem, _ = results[key]
        rel_t = f"{sec / b_time:.2f}×" if b_time else "-"
        rel_m = f"{mem / b_mem:.2f}×" if b_mem else "-"
        rate = args.examples / sec
        print(f"| {VARIANTS[key][0]} | {sec:.1f} | {rate:.1f} | {rel_t} | {mem / 2**20:.0f} | {rel_m} |")
    if "a" in results and "b" in results:
        fa, fb = results["a"][3], results["b"][3]
        err = np.abs(fa - fb).max() / np.abs(fa).max()
        print()
        print(f"(a) vs (b) features: max |difference| / max |value| = {err:.1e}")
        print(f"(b) is {results['a'][1] / b_time:.1f}× faster than (a)", end="")
        if "c" in results:
            print(f" and takes {b_time / results['c'][1]:.2f}× the time of (c)", end="")
        print(f"; peak memory (b)/(a) = {b_mem / results['a'][2]:.2f}")


if __name__ == "__main__":
    main()

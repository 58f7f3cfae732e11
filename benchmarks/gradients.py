"""Per-example gradient features: a LESS-style loop vs dataflex vs a plain training pass.

Same model, same examples, same projector, side by side in one run on CPU:

  (a) LESS-style loop: batch 1, loss.backward(), flatten .grad, Adam transform, project every 16
  (b) dataflex.gradients.compute_features: one forward + one autograd.grad per batch, streamed
  (c) plain batched forward + backward of the same batches, no per-example work (a lower bound)

Each variant runs in its own fresh process (so peak memory is its own); peak memory is the
largest resident set size above the process's size after setup, sampled every 2 ms.
Prints a table; asserts nothing about time.

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
    from dataflex.gradients import AdamState, num_trainable
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
    # One AdamW step so that Adam moments exist (and lora_B is no longer zero).
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**collate(data[: args.batch_size])).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    projector = DenseGaussian(num_trainable(model), args.proj_dim, seed=1)
    return model, data, collate, projector, AdamState.from_optimizer(model, opt), opt


def less_loop(model, data, collate, projector, state, opt, args):
    """(a) What LESS and DataFlex do: one example at a time, flatten, Adam, project every 16."""
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    m_all = torch.cat([state[n].exp_avg.flatten() for n, _ in trainable])
    v_all = torch.cat([state[n].exp_avg_sq.flatten() for n, _ in trainable])
    b1, b2, eps = state[trainable[0][0]].beta1, state[trainable[0][0]].beta2, state[trainable[0][0]].eps
    out, buf = [], []
    for ex in data:
        model.zero_grad(set_to_none=True)
        model(**collate([ex])).loss.backward()
        g = torch.cat([p.grad.view(-1) for _, p in trainable])
        m = b1 * m_all + (1 - b1) * g
        v = b2 * v_all + (1 - b2) * g * g
        buf.append(m / (v.sqrt() + eps))
        if len(buf) == 16:
            out.append(projector.project(torch.stack(buf)))
            buf = []
    if buf:
        out.append(projector.project(torch.stack(buf)))
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def ours(model, data, collate, projector, state, opt, args):
    """(b) dataflex: one forward and one autograd.grad per batch, streamed into the projector."""
    from dataflex.gradients import compute_features

    return compute_features(
        model,
        data,
        collate,
        batch_size=args.batch_size,
        transform="adam",
        projector=projector,
        adam_state=state,
        progress=False,
    )


def plain(model, data, collate, projector, state, opt, args):
    """(c) A plain batched forward + backward of the same batches: no per-example work at all."""
    for i in range(0, len(data), args.batch_size):
        model.zero_grad(set_to_none=True)
        model(**collate(data[i : i + args.batch_size])).loss.backward()
    model.zero_grad(set_to_none=True)
    return None


VARIANTS = {
    "a": ("(a) LESS-style loop", less_loop),
    "b": ("(b) dataflex batched", ours),
    "c": ("(c) plain fwd+bwd", plain),
}


def child(key: str, args: argparse.Namespace, queue) -> None:
    parts = setup(args)
    fn = VARIANTS[key][1]
    with PeakRSS() as mem:
        start = time.perf_counter()
        feats = fn(*parts, args)
        seconds = time.perf_counter() - start
    queue.put((key, seconds, mem.peak - mem.base, None if feats is None else feats.numpy()))


def main() -> None:
    args = parse_args()
    import peft
    import torch
    import transformers

    ctx = mp.get_context("spawn")
    results = {}
    for key in args.variants.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(key, args, queue))
        proc.start()
        results[key] = queue.get()
        proc.join()
        print(f"  {VARIANTS[key][0]}: {results[key][1]:.1f} s", flush=True)

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

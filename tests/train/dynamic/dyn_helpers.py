"""Shared pieces of the dynamic-selection tests (also imported by the torchrun scripts).

Two test selectors whose choices depend on the live training state, so that a
selection made one optimizer step early or late changes what they pick:

* ``test_probe`` reads the number of steps Adam has taken from the optimizer state and
  picks a contiguous block of the pool at an offset that depends on it;
* ``test_cumloss`` computes per-example losses on its shard of the pool under the
  current model, gathers them, accumulates ``lr × loss`` across rounds (its
  resumable state, a tensor) and picks the top examples.
"""

from __future__ import annotations

import random
import sys

import torch
from transformers import TrainingArguments

from dataflex.data.collator import SFTDataCollator
from dataflex.registry import SELECTORS, register_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector, SelectorParams
from dataflex.train.dynamic import DynamicSelectTrainer
from tests.conftest import make_tiny_llama


def adam_steps(optimizer) -> int:
    """Optimizer steps actually taken, read from Adam's per-parameter state (0 before any)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "step" in state:
                return int(state["step"])
    return 0


class ProbeSelector(Selector):
    """Picks a block of the pool whose offset is a function of Adam's step count."""

    calls: list[dict] = []  # noqa: RUF012

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        pool = len(ctx.train_dataset)
        taken = adam_steps(ctx.optimizer)
        ProbeSelector.calls.append(
            {
                "round": ctx.round,
                "step": ctx.step,
                "adam_steps": taken,
                "lr": ctx.learning_rate,
                "wrapped": type(ctx.model).__name__,
            }
        )
        return Selection(indices=probe_indices(pool, num_samples, taken), metadata={"adam_steps": taken})


def probe_indices(pool: int, n: int, steps: int) -> list[int]:
    """What ``test_probe`` picks after ``steps`` optimizer steps (the independent expectation)."""
    offset = (steps * 5) % pool
    return [(offset + j) % pool for j in range(n)]


def per_example_loss(model, collator, examples, batch_size: int = 8) -> torch.Tensor:
    """Mean completion-token cross-entropy of each example, no gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collator(examples[start : start + batch_size])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2).float(), labels, ignore_index=-100, reduction="none"
            )
            mask = labels != -100
            out.append((ce * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out) if out else torch.zeros(0)


class CumulativeLossSelector(Selector):
    """Top examples by Σ lr × loss over the rounds, computed on shards and gathered."""

    class Params(SelectorParams):
        pass

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cumulative: torch.Tensor | None = None

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        pool = len(ctx.train_dataset)
        self.check_budget(pool, num_samples)
        shard = ctx.dist.shard(pool)
        model = ctx.model
        model.eval()
        mine = per_example_loss(model, ctx.collator, [ctx.train_dataset[i] for i in shard])
        losses = ctx.dist.gather_tensor(mine)
        if self.cumulative is None:
            self.cumulative = torch.zeros(pool, dtype=torch.float64)
        self.cumulative += ctx.learning_rate * losses.double()
        order = torch.argsort(-self.cumulative, stable=True)[:num_samples]
        return Selection(
            indices=order.tolist(),
            scores=self.cumulative[order].tolist(),
            metadata={"mean_loss": float(losses.mean())},
        )

    def state_dict(self):
        return {} if self.cumulative is None else {"cumulative": self.cumulative.clone()}

    def load_state_dict(self, state):
        self.cumulative = state["cumulative"].clone() if "cumulative" in state else None


TEST_SELECTORS = {"test_probe": ProbeSelector, "test_cumloss": CumulativeLossSelector}


def register_test_selectors() -> None:
    """Register the test selectors (undone by :func:`unregister_test_selectors`)."""
    for name, cls in TEST_SELECTORS.items():
        register_selector(name)(cls)


def unregister_test_selectors() -> None:
    for name in TEST_SELECTORS:
        if name in SELECTORS:
            SELECTORS.unregister(name)


class IndexCollator:
    """SFTDataCollator that also passes each example's ``idx`` through (to record what trains)."""

    def __init__(self) -> None:
        self.inner = SFTDataCollator(pad_token_id=0)

    def __call__(self, examples):
        batch = self.inner(examples)
        batch["idx"] = torch.tensor([e["idx"] for e in examples])
        return batch


class RecordingTrainer(DynamicSelectTrainer):
    """Records (optimizer steps done, dataset index) of every example that reaches the loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, int]] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        idx = inputs.pop("idx")
        self.seen.extend((self.state.global_step, int(i)) for i in idx.tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def tiny_llama(seed: int = 0, vocab_size: int = 64, hidden_size: int = 16):
    """A one-layer Llama, smaller than the suite's default, for many short training runs."""
    return make_tiny_llama(
        vocab_size, hidden_size, layers=1, seed=seed,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip


def make_pool(n: int, vocab_size: int = 64, seed: int = 0) -> list[dict]:
    """``n`` tokenised examples with a masked prompt, a source ``dataset`` and their ``idx``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(4, 10)
        ids = [rng.randrange(3, vocab_size) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        out.append(
            {"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "dataset": f"d{i % 3}", "idx": i}
        )
    return out


def training_args(output_dir, **overrides) -> TrainingArguments:
    base = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "linear",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "seed": 7,
        "remove_unused_columns": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    base.update(overrides)
    return TrainingArguments(**base)


def count_calls(monkeypatch, calls: list[str], name: str, owner: object = None) -> None:
    """Append ``name`` to ``calls`` on every call of the function ``name``.

    The function is wrapped in every loaded ``dataflex`` module that holds it (each
    ``from ... import`` made its own reference), or, with ``owner``, on that object only.
    """
    holders = (
        [owner] if owner is not None else [m for n, m in sys.modules.items() if n.startswith("dataflex.")]
    )
    holders = [h for h in holders if hasattr(h, name)]
    assert holders, name
    original = getattr(holders[0], name)
    for holder in holders:
        if getattr(holder, name) is original:
            monkeypatch.setattr(holder, name, lambda *a, **k: calls.append(name) or original(*a, **k))

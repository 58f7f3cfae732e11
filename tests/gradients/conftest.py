"""Fixtures for per-example gradient tests: model variants, a dense test projector, a slow reference."""

from __future__ import annotations

import copy

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.projectors.base import Projector
from tests.adam_reference import adam_direction


class DenseGaussianProjector(Projector):
    """A seeded dense Gaussian (k, D) matrix held in memory; project() slices its columns."""

    registry_name = "test-dense"

    def __init__(self, input_dim: int, proj_dim: int, *, seed: int = 0, **kw) -> None:
        super().__init__(input_dim, proj_dim, seed=seed, **kw)
        gen = torch.Generator().manual_seed(seed)
        self.matrix = torch.randn(proj_dim, input_dim, generator=gen) / proj_dim**0.5
        self.calls: list[tuple[int, int]] = []

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        self.calls.append((offset, x.shape[1]))
        return x.float() @ self.matrix[:, offset : offset + x.shape[1]].T


def make_llama(kind: str, make_tiny_llama, seed: int = 0):
    """``full`` (biases on), ``tied`` (tied embeddings), or ``lora`` (peft, dropout > 0)."""
    if kind == "full":
        model = make_tiny_llama(
            seed=seed, intermediate_size=48, max_position_embeddings=128, attention_bias=True, mlp_bias=True
        )
        with torch.no_grad():  # biases start at zero; make them matter
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.normal_(std=0.1)
        return model
    if kind == "tied":
        return make_tiny_llama(seed=seed, layers=1, intermediate_size=48, tie_word_embeddings=True)
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            make_tiny_llama(seed=seed),
            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.3),
        )
        torch.manual_seed(seed + 1)
        with torch.no_grad():  # lora_B starts at zero, which would make lora_A's gradient vanish
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.2)
        return model
    raise ValueError(kind)


@pytest.fixture
def llama(tiny_llama):
    """Factory: ``llama("full" | "tied" | "lora", seed=0)``."""
    return lambda kind, seed=0: make_llama(kind, tiny_llama, seed)


@pytest.fixture
def dense_projector():
    """Factory: ``dense_projector(input_dim, proj_dim, seed=0)``."""
    return DenseGaussianProjector


@pytest.fixture
def slow():
    """The independent batch-1 reference, see :func:`slow_features`."""
    return slow_features


def slow_features(model, examples, *, transform="sgd", moments=None, projector=None, normalize=False):
    """Independent reference: batch-1 forward + HF loss + loss.backward() on a copy, per example.

    ``moments``: name -> (exp_avg, exp_avg_sq, beta1, beta2, eps) for the Adam formula.
    """
    model = copy.deepcopy(model)
    model.eval()
    collate = SFTDataCollator(pad_token_id=0)
    rows = []
    for ex in examples:
        model.zero_grad(set_to_none=True)
        model(**collate([ex]), use_cache=False).loss.backward()
        parts = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            g = p.grad.flatten().clone() if p.grad is not None else torch.zeros(p.numel())
            if transform == "adam":
                g = adam_direction(g, *moments[name])
            elif transform == "sign":
                g = torch.sign(g)
            parts.append(g)
        rows.append(torch.cat(parts))
    full = torch.stack(rows)
    out = full if projector is None else full @ projector.matrix.T
    if normalize:
        out = out / out.norm(dim=1, keepdim=True)
    return out


def random_adam_state(model, seed=0):
    """Adam moments of the model's trainable parameters: random, positive second moments."""
    from dataflex.gradients import AdamMoments, AdamState

    gen = torch.Generator().manual_seed(seed)
    return AdamState(
        {
            n: AdamMoments(
                torch.randn(p.shape, generator=gen) * 0.1,
                torch.rand(p.shape, generator=gen) * 0.01,
                0.9,
                0.99,
                1e-3,
            )
            for n, p in model.named_parameters()
            if p.requires_grad
        }
    )

"""Per-example parameter gradients from one batched forward and one ``autograd.grad``.

Forward hooks on every module that owns a trainable parameter record the module's
inputs and keep its output tensor. One call of ``torch.autograd.grad(total_loss,
outputs)`` then yields each output's gradient, from which per-example parameter
gradients follow exactly:

* ``nn.Linear``: ``dW[b] = gy[b]ᵀ x[b]`` (one ``bmm`` of the ``(T, out)`` and ``(T, in)``
  blocks, the per-example form of the training step's weight gradient) and
  ``db[b] = Σ_t gy[b, t]``;
* ``nn.Embedding``: rows of ``gy[b]`` scattered into the rows of the token ids;
* anything else: a vector-Jacobian product of the module alone, vmapped over the
  batch with ``torch.func`` (see :mod:`dataflex.gradients.functional`).

``autograd.grad`` is asked for gradients of activations only, never of parameters, so
no ``.grad`` is written and no ``AccumulateGrad`` node (where DDP/ZeRO hooks live) runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from einops import rearrange
from torch import nn

from dataflex.engines import full_numel
from dataflex.gradients.functional import per_example_module_grads

logger = logging.getLogger(__name__)


@dataclass
class _Call:
    """One forward call of a hooked module."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: torch.Tensor
    grad: torch.Tensor | None = None
    # (input, output-gradient) as (B, T, ·) fp32 with padding cleared, made once per call
    # and shared by every row slice and parameter of the module (see _prepared).
    prepared: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class _Owner:
    """A module that holds trainable parameters directly, with its recorded calls."""

    name: str
    module: nn.Module
    kind: str  # "linear" | "embedding" | "functional"
    calls: list[_Call] = field(default_factory=list)


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        return "linear"
    if (
        isinstance(module, nn.Embedding)
        and type(module).forward is nn.Embedding.forward
        and module.max_norm is None
        and not module.scale_grad_by_freq
    ):
        return "embedding"
    return "functional"


class GradientCapture:
    """Which modules own which trainable parameters, and the hooks that record them.

    Args:
        model: The model whose trainable parameters (``requires_grad``) are differentiated.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params: list[tuple[str, nn.Parameter]] = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad
        ]
        self.owners: list[_Owner] = []
        # id(param) -> [(owner, attribute name)]; a tied parameter has several owners.
        self.uses: dict[int, list[tuple[_Owner, str]]] = {}
        trainable = {id(p) for _, p in self.params}
        for mod_name, module in model.named_modules():
            local = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) in trainable]
            if not local:
                continue
            owner = _Owner(mod_name, module, _module_kind(module))
            self.owners.append(owner)
            for n, p in local:
                self.uses.setdefault(id(p), []).append((owner, n))
        self._recording = False
        self._pending: dict[int, int] = {}
        self._pad: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def functional_modules(self) -> list[str]:
        """Names of modules whose per-example gradients need the ``torch.func`` fallback."""
        return [o.name or "<root>" for o in self.owners if o.kind == "functional"]

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        """Register the recording hooks for the duration of the block, then clear all records."""
        handles = []
        for owner in self.owners:
            handles.append(owner.module.register_forward_hook(self._make_hook(owner), with_kwargs=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for owner in self.owners:
                owner.calls.clear()
            self._pad = None
            self._recording = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record calls only inside this block (not during recomputation or replays)."""
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    def _make_hook(self, owner: _Owner) -> Callable[[nn.Module, tuple, dict, object], None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if not self._recording:
                return
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Module {owner.name!r} ({type(module).__name__}) holds trainable parameters but returns "
                    f"{type(output).__name__}, not a tensor; per-example gradients cannot be captured "
                    "for it. Freeze its parameters, or use a model whose trainable modules return tensors."
                )
            if not output.requires_grad:
                raise RuntimeError(
                    f"The output of {owner.name!r} does not require grad although it holds trainable "
                    "parameters; was the forward run under torch.no_grad()?"
                )
            owner.calls.append(
                _Call(
                    args=tuple(_detach(a) for a in args),
                    kwargs={k: _detach(v) for k, v in kwargs.items()},
                    output=output,
                )
            )

        return hook

    def backward(self, total_loss: torch.Tensor) -> None:
        """Fill every recorded call's ``grad`` with ``∂ total_loss / ∂ output``; drop the outputs."""
        calls = [c for o in self.owners for c in o.calls]
        if not calls:
            raise RuntimeError(
                "No module holding trainable parameters was called during the forward pass; "
                "is the model the one whose parameters require grad?"
            )
        grads = torch.autograd.grad(total_loss, [c.output for c in calls], allow_unused=True)
        for c, g in zip(calls, grads):
            c.grad = g
            # Free the graph's activations early; nothing reads a call's output after this.
            c.output = None  # type: ignore[assignment]  # output is typed for while it is read
        # Trainable parameters still to be read, per owner: see release().
        self._pending = {}
        for _, param in self.params:
            for owner, _ in self.uses[id(param)]:
                self._pending[id(owner)] = self._pending.get(id(owner), 0) + 1

    def release(self, param: nn.Parameter) -> None:
        """Drop the records of the modules whose trainable parameters have all been read.

        Called after :meth:`per_example_grad` of ``param``, so the captured inputs and
        output-gradients of a layer are freed as soon as that layer is done and memory
        falls while the parameters stream into the projector.
        """
        for owner, _ in self.uses[id(param)]:
            left = self._pending.get(id(owner), 0) - 1
            self._pending[id(owner)] = left
            if left <= 0:
                owner.calls.clear()

    def sliceable(self, param: nn.Parameter) -> bool:
        """Whether :meth:`per_example_grad` of ``param`` computes only the rows it is asked for.

        True when every module using ``param`` is an ``nn.Linear`` or ``nn.Embedding``;
        the ``torch.func`` fallback always computes the whole batch.
        """
        return all(owner.kind != "functional" for owner, _ in self.uses[id(param)])

    def column_chunks(self, param: nn.Parameter) -> tuple[int, int] | None:
        """``(out_features, in_features)`` when :meth:`weight_rows_grad` serves ``param``, else None.

        True of the weight of ``nn.Linear`` modules only (not tied to an embedding): row
        ``r`` of W is flattened coordinates ``[r·in, (r+1)·in)``, so a block of rows is a
        contiguous column chunk of the flattened per-example gradient.
        """
        uses = self.uses[id(param)]
        if not all(owner.kind == "linear" and attr == "weight" for owner, attr in uses):
            return None
        module = cast(nn.Linear, uses[0][0].module)  # every use is a Linear, by the check above
        return module.out_features, module.in_features

    def weight_rows_grad(
        self, param: nn.Parameter, batch_size: int, mask: torch.Tensor | None, r0: int, r1: int
    ) -> torch.Tensor:
        """``(B, (r1 − r0)·in)`` fp32 per-example gradient of rows ``r0:r1`` of a Linear weight.

        All examples at once: one ``bmm`` of ``gy[:, :, r0:r1]ᵀ`` and ``x`` per recorded
        call; the flattened columns ``[r0·in, r1·in)`` of :meth:`per_example_grad`'s result.
        Only for a parameter :meth:`column_chunks` accepts.
        """
        in_features = cast(tuple[int, int], self.column_chunks(param))[1]
        total: torch.Tensor | None = None
        for owner, _ in self.uses[id(param)]:
            for call in owner.calls:
                if call.grad is None:
                    continue
                x, gy = self._prepared(owner, call, batch_size, mask)
                g = torch.bmm(gy[:, :, r0:r1].transpose(1, 2), x)
                total = g if total is None else total + g
        if total is None:
            return torch.zeros(batch_size, (r1 - r0) * in_features, dtype=torch.float32, device=param.device)
        return total.reshape(batch_size, -1)

    def per_example_grad(
        self, param: nn.Parameter, batch_size: int, mask: torch.Tensor | None, rows: slice | None = None
    ) -> torch.Tensor:
        """``(B, param.numel())`` fp32 per-example gradient of one trainable parameter.

        Args:
            param: A trainable parameter of the model.
            batch_size: B.
            mask: ``(B, T)`` bool mask of real tokens; recorded activations at other
                positions are zeroed (they contribute nothing, but may hold NaN).
            rows: Only these examples (a step-1 slice of ``range(B)``): the result has
                ``len(range(B)[rows])`` rows. Computed for those rows alone when
                :meth:`sliceable`, else sliced from the whole batch's.
        """
        rows = slice(0, batch_size) if rows is None else slice(*rows.indices(batch_size))
        count = rows.stop - rows.start
        total: torch.Tensor | None = None
        for owner, attr in self.uses[id(param)]:
            for call in owner.calls:
                if call.grad is None:
                    continue
                g = self._call_grad(owner, attr, call, batch_size, mask, rows)
                total = g if total is None else total + g
        if total is None:
            return torch.zeros(count, full_numel(param), dtype=torch.float32, device=param.device)
        return total.reshape(count, -1)

    def _prepared(
        self, owner: _Owner, call: _Call, batch: int, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, gy)`` of a linear/embedding call as ``(B, T, ·)``, padding cleared; made once."""
        if call.prepared is not None:
            return call.prepared
        assert call.grad is not None  # callers skip the calls that got no gradient
        gy = call.grad.float()
        if gy.shape[0] != batch:
            raise RuntimeError(
                f"Module {owner.name!r} produced an output of shape {tuple(gy.shape)} whose first "
                f"dimension is not the batch size {batch}; per-example gradients need batch-first outputs."
            )
        x = call.args[0] if call.args else call.kwargs["input"]
        if owner.kind == "linear":
            x = rearrange(x.float(), "batch ... inp -> batch (...) inp", batch=batch)
            gy = rearrange(gy, "batch ... out -> batch (...) out", batch=batch)
            if mask is not None and x.shape[1] == mask.shape[1]:
                # Padding contributes exactly nothing (its output-gradient is zero), but a
                # non-finite activation there would turn 0 into NaN: clear both.
                pad = self._padding(mask)
                gy[pad] = 0.0
                if not bool(torch.isfinite(x[pad]).all()):
                    x = x.masked_fill(~mask[:, :, None], 0.0)
        else:  # embedding: x holds the token ids
            x = x.reshape(batch, -1)
            gy = gy.reshape(batch, x.shape[1], -1)
            if mask is not None and x.shape[1] == mask.shape[1]:
                gy[self._padding(mask)] = 0.0
        call.prepared = (x, gy)
        call.grad = gy  # the original is no longer needed; keep one copy alive, not two
        return call.prepared

    def _padding(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, positions)`` of the padded tokens of ``mask``, found once per batch.

        Indexing with them touches only the padded entries, where a boolean mask over
        ``(B, T, ·)`` reads and writes all of them, for every module.
        """
        if self._pad is None or self._pad[0] is not mask:
            rows, positions = (~mask).nonzero(as_tuple=True)
            self._pad = (mask, (rows, positions))
        return self._pad[1]

    def _call_grad(
        self, owner: _Owner, attr: str, call: _Call, batch: int, mask: torch.Tensor | None, rows: slice
    ) -> torch.Tensor:
        assert call.grad is not None  # callers skip the calls that got no gradient
        if owner.kind == "functional":
            full = per_example_module_grads(owner.module, attr, call.args, call.kwargs, call.grad, batch)
            return full if rows.stop - rows.start == batch else full[rows]
        x, gy = self._prepared(owner, call, batch, mask)
        x, gy = x[rows], gy[rows]
        if owner.kind == "linear":
            if attr == "weight":
                return torch.bmm(gy.transpose(1, 2), x)
            return gy.sum(dim=1)
        module = cast(nn.Embedding, owner.module)  # owner.kind says so
        count, vocab = x.shape[0], module.num_embeddings
        flat = (x + torch.arange(count, device=x.device)[:, None] * vocab).reshape(-1)
        out = torch.zeros(count * vocab, gy.shape[-1], dtype=gy.dtype, device=gy.device)
        out.index_add_(0, flat, gy.reshape(-1, gy.shape[-1]))
        out = out.view(count, vocab, -1)
        if module.padding_idx is not None:
            out[:, module.padding_idx] = 0.0
        return out


def _detach(value: object) -> object:
    return value.detach() if isinstance(value, torch.Tensor) else value

"""``per_example_features``: transformed, projected per-example gradients of a batch."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataflex.data.collator import IGNORE_INDEX
from dataflex.engines import full_numel
from dataflex.errors import ConfigError
from dataflex.gradients.batching import causal_lm_inputs
from dataflex.gradients.block_plan import BlockSizes, ParamFacts, Step, plan_blocks
from dataflex.gradients.block_stream import BlockStream
from dataflex.gradients.capture import GradientCapture
from dataflex.gradients.sharded import check_capturable
from dataflex.gradients.transforms import AdamState, ColumnTransform, check_transform, inplace_transform
from dataflex.logging_utils import log_once
from dataflex.projectors.base import Projector

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 22
"""Most elements (B × columns) of consecutive parameter blocks joined into one ``project`` call."""

ROW_BLOCK_ELEMENTS = 1 << 17
"""Target elements (rows × columns, 512 KiB fp32) of one row block of a large parameter.

With a projector whose cost is per entry (:attr:`Projector.row_blocks`), a parameter
whose ``B × numel`` exceeds this is never made whole: a Linear weight goes in column
chunks (:data:`COLUMN_CHUNK_ELEMENTS`), any other parameter a few examples at a time,
so each block is still in cache when the transform and the projection read it."""

COLUMN_CHUNK_ELEMENTS = 1 << 19
"""Target elements (B × columns, 2 MiB fp32) of one column chunk of a large Linear weight.

With a projector whose cost is per entry (:attr:`Projector.row_blocks`), a Linear weight
whose ``B × numel`` exceeds :data:`ROW_BLOCK_ELEMENTS` is made, transformed and
accumulated into the projection a block of its rows at a time, for all B examples at
once (:class:`~dataflex.gradients.block_plan.ColumnChunks`)."""

FUSED_CHUNK_ELEMENTS = 1 << 21
"""Target elements (8 MiB fp32) of one column chunk when the projector fuses the transform.

A fused kernel blocks its own work for the cache (:mod:`dataflex.projectors.native`), so
the chunk can be as large as makes the per-example ``bmm`` efficient: at 2 MiB a Linear
with ``in_features = 2048`` gets 16-row chunks, which run the GEMM at ~1.8× its full-size
cost on a CPU; at 8 MiB, 64 rows."""

PHASES = ("forward", "backward", "per_example", "transform", "projection", "normalize")
"""The phases of a feature pass that :attr:`FeaturePlan.timings` accumulates (seconds).

Where the projector fuses the transform into its scatter (:meth:`Projector.fuses`),
that block's transform is timed as part of ``projection``."""


def num_trainable(model: nn.Module) -> int:
    """Number of trainable scalars: D, the width of unprojected features."""
    return sum(full_numel(p) for p in model.parameters() if p.requires_grad)  # full, not ZeRO-3 shards


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example mean token cross-entropy over completion tokens, with the causal shift.

    Args:
        logits: ``(B, T, V)`` next-token logits.
        labels: ``(B, T)`` token ids, :data:`IGNORE_INDEX` where no loss is taken.

    Returns:
        ``(losses, counts)``: ``(B,)`` fp32 mean losses (0 for an example without
        completion tokens) and ``(B,)`` numbers of completion tokens.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return ce.sum(dim=1) / counts.clamp_min(1), counts


class FeaturePlan:
    """Everything about a feature computation that does not depend on the batch.

    Built (and validated) once; :meth:`features` may then be called for many batches.
    Each batch runs the forward and the backward here, then :meth:`plan` (the planner,
    :mod:`dataflex.gradients.block_plan`) decides the blocks each parameter's gradient is
    made in and a :class:`~dataflex.gradients.block_stream.BlockStream` (the executor)
    makes, transforms and projects them. Arguments are those of
    :func:`per_example_features`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        transform: str = "sgd",
        projector: Projector | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        adam_state: AdamState | None = None,
        allow_sgd_fallback: bool = False,
        profile: bool = False,
    ) -> None:
        transform = check_transform(transform)
        self.model = model
        self.profile = profile
        self.timings: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.capture = GradientCapture(model)
        if not self.capture.params:
            raise ConfigError(
                "The model has no trainable parameters (requires_grad=True); nothing to differentiate."
            )
        self.dim = sum(full_numel(p) for _, p in self.capture.params)
        check_capturable(model, self.capture.functional_modules)
        if projector is not None and projector.input_dim != self.dim:
            raise ConfigError(
                f"projector.input_dim is {projector.input_dim} but the model has {self.dim} trainable "
                f"parameters; build the projector with input_dim=num_trainable(model) (= {self.dim})."
            )
        self.projector = projector
        self.adam_state: AdamState | None = None
        if transform == "adam":
            transform = self._resolve_adam(optimizer, adam_state, allow_sgd_fallback)
        self.transform = transform
        self.facts = [
            ParamFacts(
                name,
                full_numel(param),
                self.capture.column_chunks(param),
                self.capture.sliceable(param),
                projector is not None and projector.fuses(self._transform_of(name, param)),
            )
            for name, param in self.capture.params
        ]
        """What planning needs of each trainable parameter (:func:`plan_blocks`)."""
        self._executor = BlockStream(self.capture, projector, self._transform_of, transform, self._phase)
        if self.capture.functional_modules:
            log_once(  # a plan is built every round; the fact holds for the whole run
                logger,
                logging.INFO,
                "Per-example gradients of %s use the torch.func fallback (not nn.Linear/nn.Embedding).",
                ", ".join(self.capture.functional_modules),
            )
        if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
            log_once(
                logger,
                logging.INFO,
                "Gradient checkpointing is inactive during the feature pass (the model runs in eval mode, "
                "where checkpointing layers run plainly); results are identical, memory use is that of a "
                "plain forward.",
            )

    def _resolve_adam(
        self, optimizer: torch.optim.Optimizer | None, adam_state: AdamState | None, allow_fallback: bool
    ) -> str:
        if optimizer is not None and adam_state is not None:
            raise ConfigError("Pass either optimizer= or adam_state= for transform='adam', not both.")
        names = [n for n, _ in self.capture.params]
        if adam_state is None and optimizer is not None:
            adam_state = AdamState.from_optimizer(self.model, optimizer)
        if adam_state is None:
            problem = "no optimizer= or adam_state= was given"
        else:
            missing = adam_state.missing(names)
            if not missing:
                self.adam_state = adam_state
                return "adam"
            problem = (
                f"there is no Adam state for {len(missing)} of {len(names)} trainable parameters "
                f"(first: {missing[0]!r}); the optimizer has not stepped yet or holds other parameters"
            )
        if allow_fallback:
            logger.warning("transform='adam' falls back to 'sgd': %s.", problem)
            return "sgd"
        raise ConfigError(
            f"transform='adam' needs Adam moments, but {problem}. Pass optimizer= (a torch.optim.Adam/AdamW "
            "that has stepped) or adam_state=AdamState.from_checkpoint(model, dir), or "
            "allow_sgd_fallback=True to use plain gradients instead."
        )

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to ``timings[name]`` (synchronising CUDA first when profiling)."""
        cuda = self.profile and torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize()
            self.timings[name] += time.perf_counter() - t0

    def features(self, batch: Mapping[str, Any], normalize: bool = False) -> torch.Tensor:
        """``(B, k)`` fp32 features of one collated batch (see :func:`per_example_features`).

        The seconds spent in each phase accumulate in :attr:`timings` (keys :data:`PHASES`).
        """
        input_ids, mask, labels = _unpack(batch)
        bsz = input_ids.shape[0]
        extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
        if "position_ids" in extra:
            inputs = {"input_ids": input_ids, "attention_mask": mask}
        else:
            inputs = causal_lm_inputs(input_ids, mask)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()  # dropout off
        try:
            with torch.enable_grad(), self.capture.hooks():
                with self._phase("forward"), self.capture.recording():
                    out = self.model(**inputs, use_cache=False, **extra)
                    logits = out.logits if hasattr(out, "logits") else out[0]
                    losses, counts = per_example_losses(logits, labels)
                    del out, logits
                empty = (counts == 0).nonzero().flatten().tolist()
                if empty:
                    logger.warning(
                        "Batch rows %s have no completion tokens (all labels %d); their gradient is zero.",
                        empty,
                        IGNORE_INDEX,
                    )
                with self._phase("backward"):
                    self.capture.backward(losses.sum())
                padded = not bool(mask.bool().all())
                return self._stream(bsz, mask.bool() if padded else None, normalize)
        finally:
            for m, training in modes.items():
                m.training = training

    def parameter_block(
        self, name: str, param: nn.Parameter, bsz: int, mask: torch.Tensor | None, rows: slice | None = None
    ) -> torch.Tensor:
        """``(B, param.numel())`` transformed per-example gradient of one trainable parameter.

        With the column chunks of Linear weights (which read only the captured
        activations and the Adam moments, never the weight itself), the one place where
        a parameter is read during the stream: an engine that shards parameters gathers
        ``param`` around this call. The layer's captured records are released after the
        block holding its last row.

        Args:
            name: The parameter's name (its Adam moments are looked up by it).
            param: The parameter.
            bsz: B.
            mask: ``(B, T)`` bool mask of real tokens, or None (no padding).
            rows: Only these examples (a step-1 slice of ``range(B)``; default all).
        """
        transform = self._transform_of(name, param)
        return next(self._executor.row_blocks(param, bsz, mask, [rows or slice(0, bsz)], transform))

    def _transform_of(self, name: str, param: nn.Parameter) -> ColumnTransform:
        moments = self.adam_state[name] if self.adam_state is not None and self.transform == "adam" else None
        return inplace_transform(self.transform, moments, param.device)

    def _block_sizes(self) -> BlockSizes:
        """This module's element budgets, read when a batch is planned."""
        return BlockSizes(CHUNK_ELEMENTS, ROW_BLOCK_ELEMENTS, COLUMN_CHUNK_ELEMENTS, FUSED_CHUNK_ELEMENTS)

    def plan(self, bsz: int) -> list[Step]:
        """The blocks a batch of ``bsz`` examples is computed in (:func:`plan_blocks`)."""
        projector = self.projector
        row_blocks = projector is not None and projector.row_blocks
        return plan_blocks(
            self.facts, bsz, self._block_sizes(), projected=projector is not None, row_blocks=row_blocks
        )

    def _stream(self, bsz: int, mask: torch.Tensor | None, normalize: bool) -> torch.Tensor:
        """The batch's features: :meth:`plan` run by the :class:`BlockStream`, normalised if asked."""
        feats = self._executor.run(self.plan(bsz), bsz, mask)
        if normalize:
            with self._phase("normalize"):
                feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(torch.finfo(feats.dtype).tiny)
        return feats


def _unpack(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = [k for k in ("input_ids", "labels") if k not in batch]
    if missing:
        raise ValueError(
            f"batch is missing {missing}; pass the collator's output (input_ids, attention_mask, labels)."
        )
    input_ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    if input_ids.dim() != 2 or labels.shape != input_ids.shape or mask.shape != input_ids.shape:
        raise ValueError(
            f"batch tensors must all be (B, T): input_ids {tuple(input_ids.shape)}, "
            f"labels {tuple(labels.shape)}, attention_mask {tuple(mask.shape)}."
        )
    return input_ids, mask, labels


def per_example_features(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    transform: str = "sgd",
    projector: Projector | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    adam_state: AdamState | None = None,
    normalize: bool = False,
    allow_sgd_fallback: bool = False,
) -> torch.Tensor:
    """Feature of each example of a batch alone, from one forward and one backward.

    Row b is the transformed (and optionally projected, normalised) gradient of
    ℓ_b = mean cross-entropy over example b's completion tokens, so it depends
    neither on its batch-mates nor on padding. Training state is untouched: no
    ``.grad`` is written, the optimizer is only read, the train/eval mode of every
    module is restored, and dropout is off during the pass.

    Args:
        model: A causal LM (``transformers`` or ``peft``-wrapped); its parameters with
            ``requires_grad`` are the ones differentiated. Pass the unwrapped module
            (not DDP).
        batch: ``input_ids``, ``attention_mask`` and ``labels`` as the collator makes
            them (right or left padded), on the model's device.
        transform: ``"sgd"`` (raw gradient), ``"adam"`` (one-step Adam direction) or
            ``"sign"``.
        projector: Streams each parameter's block into ``projector.project(x, offset)``;
            its ``input_dim`` must equal :func:`num_trainable`. ``None``: columns are the
            trainable parameters flattened in ``named_parameters()`` order.
        optimizer: A live Adam/AdamW whose moments ``adam`` uses.
        adam_state: Moments from elsewhere (e.g. :meth:`AdamState.from_checkpoint`).
        normalize: Divide each row by its L2 norm.
        allow_sgd_fallback: With ``adam`` and no (complete) Adam state, log a warning
            and use ``sgd`` instead of raising.

    Returns:
        ``(B, k)`` fp32 tensor; k = ``projector.proj_dim`` or the number of trainable parameters.

    Raises:
        ConfigError: on an unknown transform, a projector of the wrong ``input_dim``,
            missing Adam state (unless ``allow_sgd_fallback``), or no trainable parameters.
    """
    plan = FeaturePlan(
        model,
        transform=transform,
        projector=projector,
        optimizer=optimizer,
        adam_state=adam_state,
        allow_sgd_fallback=allow_sgd_fallback,
    )
    return plan.features(batch, normalize=normalize)

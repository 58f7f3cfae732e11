"""``per_example_features``: transformed, projected per-example gradients of a batch."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from dataflex.data.collator import IGNORE_INDEX
from dataflex.engines import full_numel
from dataflex.errors import ConfigError
from dataflex.gradients.batching import causal_lm_inputs
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
once (:meth:`FeaturePlan._column_chunks`)."""

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
    Arguments are those of :func:`per_example_features`.
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

        With the column chunks of Linear weights (:meth:`_column_chunks`, which read only
        the captured activations and the Adam moments, never the weight itself), the one
        place where a parameter is read during the stream: an engine that shards
        parameters gathers ``param`` around this call. The layer's captured records are
        released after the block holding its last row.

        Args:
            name: The parameter's name (its Adam moments are looked up by it).
            param: The parameter.
            bsz: B.
            mask: ``(B, T)`` bool mask of real tokens, or None (no padding).
            rows: Only these examples (a step-1 slice of ``range(B)``; default all).
        """
        transform = self._transform_of(name, param)
        return next(self._row_blocks(param, bsz, mask, [rows or slice(0, bsz)], transform))

    def _transform_of(self, name: str, param: nn.Parameter) -> ColumnTransform:
        moments = self.adam_state[name] if self.transform == "adam" else None
        return inplace_transform(self.transform, moments, param.device)

    def _row_blocks(
        self,
        param: nn.Parameter,
        bsz: int,
        mask: torch.Tensor | None,
        slices: list[slice],
        transform: ColumnTransform | None,
    ) -> Iterator[torch.Tensor]:
        """The blocks of ``param`` for each row slice in turn, transformed unless ``transform`` is None."""
        for i, rows in enumerate(slices):
            with self._phase("per_example"):
                g = self.capture.per_example_grad(param, bsz, mask, rows)
            if i == len(slices) - 1:
                self.capture.release(param)
            if transform is not None and self.transform != "sgd":
                with self._phase("transform"):
                    g = transform(g)
            yield g

    def _row_slices(self, param: nn.Parameter, bsz: int) -> list[slice] | None:
        """Row slices for projecting ``param`` a few examples at a time, or None (whole batch)."""
        if not self._streams_in_blocks(param, bsz) or not self.capture.sliceable(param):
            return None
        step = max(1, ROW_BLOCK_ELEMENTS // full_numel(param))
        return [slice(a, min(a + step, bsz)) for a in range(0, bsz, step)]

    def _chunk_shape(self, param: nn.Parameter, bsz: int) -> tuple[int, int] | None:
        """``(out, in)`` of a Linear weight to stream in column chunks, or None (other paths)."""
        if not self._streams_in_blocks(param, bsz):
            return None
        return self.capture.column_chunks(param)

    def _streams_in_blocks(self, param: nn.Parameter, bsz: int) -> bool:
        """Whether ``param``'s ``B × numel`` block is too large to make whole for a per-entry projector."""
        return getattr(self.projector, "row_blocks", False) and bsz * full_numel(param) > ROW_BLOCK_ELEMENTS

    def _projected(self, g: torch.Tensor, offset: int, transform: ColumnTransform | None) -> torch.Tensor:
        """``project(g, offset)``, or with ``transform`` of raw ``g`` transformed inside the scatter."""
        projector = cast(Projector, self.projector)
        if transform is None:
            return projector.project(g, offset)
        acc = projector.accumulator(g.shape[0])
        projector.accumulate_transformed(acc, g, offset, transform, 0)
        return projector.finish(acc)

    def _column_chunks(
        self,
        name: str,
        param: nn.Parameter,
        bsz: int,
        mask: torch.Tensor | None,
        start: int,
        shape: tuple[int, int],
    ) -> torch.Tensor:
        """``(B, k)`` projection of a large Linear weight (``shape``), made a column chunk at a time.

        Rows ``r0:r1`` of W are flattened columns ``[r0·in, r1·in)``: their per-example
        gradients for all B examples come from one ``bmm``, are transformed in place with
        those columns' moments and added into one accumulator
        (:meth:`Projector.accumulate`), so each hashed index is read once per batch, not
        once per example, and at most one chunk of ``B × (r1 − r0)·in`` exists. A
        projector that :meth:`~Projector.fuses` the transform does both in one pass
        (:meth:`Projector.accumulate_transformed`), on chunks of
        :data:`FUSED_CHUNK_ELEMENTS`.
        """
        projector = cast(Projector, self.projector)  # row_blocks is a Projector attribute
        out_features, in_features = shape
        transform = self._transform_of(name, param)
        fused = projector.fuses(transform)
        chunk = FUSED_CHUNK_ELEMENTS if fused else COLUMN_CHUNK_ELEMENTS
        step = max(1, chunk // (bsz * in_features))
        acc = projector.accumulator(bsz)
        for r0 in range(0, out_features, step):
            r1 = min(r0 + step, out_features)
            with self._phase("per_example"):
                g = self.capture.weight_rows_grad(param, bsz, mask, r0, r1)
            first = r0 * in_features
            if fused:
                with self._phase("projection"):
                    projector.accumulate_transformed(acc, g, start + first, transform, first)
            else:
                if self.transform != "sgd":
                    with self._phase("transform"):
                        g = transform(g, first)
                with self._phase("projection"):
                    projector.accumulate(acc, g, start + first)
            del g
        self.capture.release(param)
        with self._phase("projection"):
            return projector.finish(acc)

    def _stream(self, bsz: int, mask: torch.Tensor | None, normalize: bool) -> torch.Tensor:
        """Per-parameter blocks, transformed, projected a few consecutive parameters at a time.

        One parameter's per-example gradient exists at a time (the largest one alone is
        ``B × numel``): consecutive small blocks (LoRA matrices) are joined up to
        :data:`CHUNK_ELEMENTS` before each ``project`` call, larger ones are projected as
        soon as they are made, so memory stays O(B × (largest parameter + chunk)). With a
        per-entry projector (``sjlt``) a large Linear weight goes a column chunk of all B
        examples at a time (:meth:`_column_chunks`), another large parameter a few rows
        at a time (:data:`ROW_BLOCK_ELEMENTS`), and memory is O(one such block + chunk).
        """
        projector = self.projector
        chunks: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []  # the joined group's transformed blocks, or
        group: torch.Tensor | None = None  # its accumulator, when the projector fuses the transform
        out: torch.Tensor | None = None
        width = start = 0

        def add(part: torch.Tensor, rows: slice) -> None:
            nonlocal out
            if out is None:
                out = torch.zeros(bsz, part.shape[1], dtype=part.dtype, device=part.device)
            out[rows].add_(part)

        def flush() -> None:
            nonlocal width, start, pending, group
            with self._phase("projection"):
                if group is not None:
                    add(projector.finish(group), slice(0, bsz))
                else:
                    add(
                        projector.project(
                            pending[0] if len(pending) == 1 else torch.cat(pending, dim=1), start
                        ),
                        slice(0, bsz),
                    )
            start += width
            width, pending, group = 0, [], None

        for name, param in self.capture.params:
            shape = self._chunk_shape(param, bsz)
            if shape is not None:
                if width:
                    flush()
                add(self._column_chunks(name, param, bsz, mask, start, shape), slice(0, bsz))
                start += full_numel(param)
                continue
            transform = self._transform_of(name, param)
            fused = projector is not None and projector.fuses(transform)
            slices = None if projector is None else self._row_slices(param, bsz)
            if slices is not None:
                if width:
                    flush()
                for rows, g in zip(
                    slices, self._row_blocks(param, bsz, mask, slices, None if fused else transform)
                ):
                    with self._phase("projection"):
                        add(self._projected(g, start, transform if fused else None), rows)
                    del g
                start += full_numel(param)
                continue
            g = next(self._row_blocks(param, bsz, mask, [slice(0, bsz)], None if fused else transform))
            if projector is None:
                chunks.append(g)
                continue
            if width and ((width + g.shape[1]) * bsz > CHUNK_ELEMENTS or fused != (group is not None)):
                flush()
            if fused:
                if group is None:
                    group = projector.accumulator(bsz)
                with self._phase("projection"):
                    projector.accumulate_transformed(group, g, start + width, transform, 0)
            else:
                pending.append(g)
            width += g.shape[1]
            del g
            if width * bsz >= CHUNK_ELEMENTS:
                flush()  # project it now: the next parameter's block is not made beside it
        if width:
            flush()
        feats = torch.cat(chunks, dim=1) if self.projector is None else out
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

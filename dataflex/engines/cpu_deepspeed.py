"""DeepSpeed through the Hugging Face Trainer on a machine without an accelerator.

``TrainingArguments`` brings DeepSpeed up through accelerate's ``PartialState`` without
naming a backend; on a CPU-only machine accelerate then finds none and falls back to
one process (DeepSpeed's config check fails with ``train_batch_size ... 2 != 1 * 1 * 1``),
and ``use_cpu=True`` switches DeepSpeed off altogether. Configuring the state first,
with the gloo backend, and letting the Trainer use it (``use_configured_state``) runs
DeepSpeed's CPU accelerator on gloo under torchrun.
"""

from __future__ import annotations

import os
from typing import Any

from dataflex.engines.detect import has_accelerator


def cpu_deepspeed_training_kwargs() -> dict[str, Any]:
    """Configure accelerate's state for DeepSpeed on gloo; the ``TrainingArguments`` kwargs to use it.

    Call once per process, before ``TrainingArguments`` is built, under torchrun
    (``LOCAL_RANK`` set) on a machine without CUDA.
    """
    from accelerate import PartialState

    previous = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what TrainingArguments sets around the same call
    try:
        PartialState(backend="gloo")
    finally:
        if previous is None:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = previous
    return {"accelerator_config": {"use_configured_state": True}}


def name_cpu_for_deepspeed() -> None:
    """On a machine where torch sees no accelerator, tell DeepSpeed that it is the CPU.

    accelerate imports DeepSpeed whenever it is installed (the Trainer unwraps every model
    through it), and DeepSpeed's own detection then warns "Setting accelerator to CPU. If
    you have GPU or other accelerator, we were unable to detect it." on every run, DeepSpeed
    used or not. ``DS_ACCELERATOR`` is DeepSpeed's switch for that choice: it is set to the
    answer the detection reaches here, before DeepSpeed is imported; a value already set
    is kept, and nothing is set where an accelerator is visible.
    """
    if not has_accelerator():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

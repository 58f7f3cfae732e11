"""Mixed precision the machine can run, checked before the model loads.

``TrainingArguments(bf16=True)`` refuses a machine without bfloat16 support with
"You need to assign use_cpu if you want to train the model on CPU", which points at the
wrong fix. :func:`check_bf16` asks the same question transformers asks, first, and says
what is wrong and what to change.
"""

from __future__ import annotations

from dataflex.errors import ConfigError


def bf16_supported() -> bool:
    """Whether transformers finds bfloat16 on this machine's accelerator (its own probes)."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return bool(is_torch_bf16_gpu_available() or is_torch_xla_available())


def check_bf16(bf16: bool, use_cpu: bool) -> None:
    """Refuse ``bf16: true`` where ``TrainingArguments`` would: no ``use_cpu`` and no bf16 support.

    The condition is transformers' own (``TrainingArguments.__post_init__``): bf16 without
    ``use_cpu`` needs :func:`bf16_supported`. CPU autocast (``use_cpu``, which dataflex
    sets on a machine without an accelerator) always has bfloat16.

    Raises:
        ConfigError: naming ``bf16`` and the fix.
    """
    if not bf16 or use_cpu or bf16_supported():
        return
    import torch

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        where = f"the GPU ({gpu}) has no bfloat16 support (it needs an Ampere or newer GPU)"
        other = ", or fp16: true for float16 mixed precision"
    else:
        where = "this machine has no bfloat16 support that transformers can use on its accelerator"
        other = ""
    raise ConfigError(f"bf16: true, but {where}. Set bf16: false to train in fp32{other}.")

"""FSDP2 through the Hugging Face Trainer on a machine without an accelerator.

accelerate's ``AcceleratorState`` turns the ``FullyShardedDataParallelPlugin`` the Trainer
builds from ``fsdp`` / ``fsdp_config`` on only for accelerator devices (``MULTI_GPU``,
``MULTI_NPU``, ...). On the CPU (``MULTI_CPU``, gloo) it drops the plugin without a word
and the Trainer wraps the model in DDP, so a run asking for FSDP would train unsharded.
``torch.distributed.fsdp.fully_shard`` itself runs on gloo; what is missing is only the
state accelerate sets on an accelerator, so dataflex sets the same state itself: the
process group on gloo first (the Trainer then uses it, ``use_configured_state``), and,
once ``TrainingArguments`` has mapped the config onto the plugin's arguments
(``fsdp_plugin_args``, transformers' own mapping), the shared accelerate state with that
plugin and ``DistributedType.FSDP``, as ``AcceleratorState`` records it on an accelerator
(it writes the type into ``PartialState``'s shared state too). The Trainer's
``Accelerator`` finds the state initialised and keeps it; from there its FSDP2 route
(``fsdp2_prepare_model``, FSDP checkpoints, full state dicts on save) is the one it takes
on GPUs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import TrainingArguments


def cpu_fsdp_training_kwargs() -> dict[str, Any]:
    """Bring the gloo process group up; the ``TrainingArguments`` kwargs that make the Trainer use it.

    Call once per process, under torchrun (``LOCAL_RANK`` set) on a machine without an
    accelerator, before ``TrainingArguments`` is built; then :func:`configure_cpu_fsdp`.
    """
    from accelerate import PartialState

    PartialState(cpu=True, backend="gloo")
    return {"use_cpu": True, "accelerator_config": {"use_configured_state": True}}


def configure_cpu_fsdp(args: TrainingArguments) -> None:
    """Set accelerate's shared state to FSDP with the plugin ``args`` describe.

    Args:
        args: ``TrainingArguments`` built with :func:`cpu_fsdp_training_kwargs` and ``fsdp`` set
            (``args.fsdp_plugin_args`` is transformers' mapping of ``fsdp`` / ``fsdp_config``).

    Raises:
        ValueError: if ``args`` has no FSDP plugin arguments.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin_args = getattr(args, "fsdp_plugin_args", None)
    if not plugin_args:
        raise ValueError("configure_cpu_fsdp needs TrainingArguments with fsdp set.")
    mixed_precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    Accelerator(cpu=True, mixed_precision=mixed_precision)  # initialises AcceleratorState (as MULTI_CPU)
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)  # as AcceleratorState does on an accelerator
    state = AcceleratorState()
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState().distributed_type = DistributedType.FSDP

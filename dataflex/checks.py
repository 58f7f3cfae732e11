"""Input checks shared by every command that need neither a model nor data."""

from __future__ import annotations

from dataflex.errors import ConfigError


def check_device(spec: str, key: str = "device") -> None:
    """A ``cuda``/``cuda:N`` device is refused when no such CUDA device is visible.

    Raises:
        ConfigError: naming ``key`` and the fix (``auto`` or ``cpu``).
    """
    import torch

    if not spec.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}: {spec!r}, but no CUDA device is visible; use {key}: auto or {key}: cpu.")
    index = spec.partition(":")[2]
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"{key}: {spec!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible."
        )

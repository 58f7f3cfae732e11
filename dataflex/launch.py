"""``FORCE_TORCHRUN=1 dataflex-cli train ...``: relaunch the command under torchrun.

The LLaMA-Factory convention: with ``FORCE_TORCHRUN`` set (or more than one CUDA device
visible), ``dataflex-cli train`` starts ``torchrun`` on itself with the same arguments,
configured by the environment variables ``NNODES`` (1), ``NODE_RANK`` (0),
``NPROC_PER_NODE`` (the CUDA device count, at least 1), ``MASTER_ADDR`` (127.0.0.1) and
``MASTER_PORT`` (a free port).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from dataflex.errors import ConfigError
from dataflex.relaunch import run_relaunched

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"", "0", "false", "no", "n", "off"}


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """``True``/``False`` for a set boolean variable, ``None`` when unset.

    Raises:
        ConfigError: for a value that is not a recognisable boolean.
    """
    env = os.environ if environ is None else environ
    if name not in env:
        return None
    value = env[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={env[name]!r} is not a boolean; use 1 or 0.")


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer.") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name}={value} must be >= {minimum}.")
    return value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def under_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a process that torchrun (torch.distributed.run) started."""
    env = os.environ if environ is None else environ
    return "TORCHELASTIC_RUN_ID" in env or ("LOCAL_RANK" in env and "WORLD_SIZE" in env)


def torchrun_launcher() -> list[str]:
    """How torchrun is started: in-process, so that a rank's error is printed once."""
    return [sys.executable, "-m", "dataflex.relaunch"]


def torchrun_command(
    argv: Sequence[str], module: str = "dataflex.cli", environ: Mapping[str, str] | None = None
) -> list[str]:
    """The torchrun command line that runs ``python -m <module> <argv>`` on every process."""
    env = os.environ if environ is None else environ
    nproc = _env_int(env, "NPROC_PER_NODE", max(_cuda_device_count(), 1), 1)
    nnodes = _env_int(env, "NNODES", 1, 1)
    node_rank = _env_int(env, "NODE_RANK", 0, 0)
    master_port = _env_int(env, "MASTER_PORT", 0, 0) or _free_port()
    return [
        *torchrun_launcher(),
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--nproc_per_node={nproc}",
        f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}",
        f"--master_port={master_port}",
        "-m",
        module,
        *argv,
    ]


def maybe_relaunch_with_torchrun(argv: Sequence[str], module: str = "dataflex.cli") -> int | None:
    """Relaunch ``python -m <module> <argv>`` under torchrun when asked to; return its exit code.

    Returns ``None`` (the caller carries on in this process) when already under torchrun,
    when ``FORCE_TORCHRUN`` is unset/false and at most one CUDA device is visible.

    Raises:
        ConfigError: for malformed ``FORCE_TORCHRUN`` / ``NPROC_PER_NODE`` / ``NNODES`` /
            ``NODE_RANK`` / ``MASTER_PORT`` values.
    """
    if under_torchrun():
        return None
    force = env_flag("FORCE_TORCHRUN")
    if force is False or (force is None and _cuda_device_count() <= 1):
        return None
    cmd = torchrun_command(argv, module)
    logger.info("dataflex: launching %s", " ".join(cmd))
    return run_relaunched(cmd[len(torchrun_launcher()) :])

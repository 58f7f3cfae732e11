"""The ``cuda`` kernel's exact code, run by Triton's CPU interpreter, passes the projector suite.

``TRITON_INTERPRET`` is read when a kernel is defined, so the suite runs in a fresh
interpreter with the variable set before anything imports Triton.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataflex.projectors.cuda import triton_available

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUITE = ["test_properties.py", "test_same_matrix.py", "test_errors.py", "test_sjlt.py"]


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the suite runs the real kernel")
def test_triton_kernels_pass_the_suite_under_the_triton_interpreter():
    """The dense ``cuda`` kernel and the ``sjlt`` Triton kernel."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"]
    cmd += [str(HERE / name) for name in SUITE] + ["-k", "cuda or triton"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    passed = re.search(r"(\d+) passed", result.stdout)
    # Every property and cross-backend test ran on the kernel (none skipped for want of a GPU).
    assert passed, report
    assert int(passed.group(1)) >= 14, report
    assert "no GPU here" not in result.stdout, report
    # The sjlt kernel ran the property suite and its own tests, not just the dense kernel.
    sjlt_passed = [line for line in result.stdout.splitlines() if "PASSED" in line and "triton" in line]
    assert len(sjlt_passed) >= 10, report

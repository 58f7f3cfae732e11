"""Under torchrun, an error every rank finds is printed once, exit code 1, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

from dataflex.relaunch import run_relaunched

ROOT = Path(__file__).resolve().parents[2]


def test_an_error_on_every_rank_is_printed_once_without_traceback(capfd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--standalone", "--nproc_per_node=2", "-m", "tests.reliability.fail_on_every_rank"]
    code = run_relaunched(args, env)
    err = capfd.readouterr().err
    assert code == 1
    assert err.count("dataflex-cli train: error: dataset 'nope' is not in dataset_info.json.") == 1, err
    assert "Traceback" not in err and "ChildFailedError" not in err, err
    assert "failed (exitcode" not in err, err

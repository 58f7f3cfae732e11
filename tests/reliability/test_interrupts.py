"""A run stopped by SIGKILL, SIGTERM or Ctrl-C at a chosen point resumes to the uninterrupted result.

The training process is a real ``dataflex-cli train`` subprocess that stops itself exactly
at a point of the run (``DATAFLEX_TEST_STOP_AT``, see :mod:`dataflex.stop_points`): mid
warm-up, mid scoring pass, between a round's features and its record, mid checkpoint save.
Then nothing it left may be half-written where a later run reads it, and
``resume_from_checkpoint: true`` must give the uninterrupted run's selections and adapter bit
for bit, redoing an interrupted round exactly.

Schedule: warm-up 2 steps, then 2 rounds of 1 step (rounds made at the end of steps 2 and 3),
a checkpoint at every step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from dataflex import stop_points
from dataflex.io import check_json_file, check_safetensors, check_torch_file, verify
from dataflex.io.integrity import sidecar
from dataflex.train.dynamic import read_selections
from dataflex.train.dynamic.resume import checkpoint_problem, last_complete_checkpoint
from tests.reliability.conftest import LESS_YAML, QUICKSTART, ROOT, run_cli, write_components

YAML = LESS_YAML.format(model="model").replace("warmup_step: 1", "warmup_step: 2") + "plot_loss: false\n"
EXIT = {"KILL": -9, "TERM": 128 + 15, "INT": 128 + 2}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The resumed half runs here, the first half in a subprocess with OMP_NUM_THREADS=1: same bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _work(root):
    shutil.copytree(QUICKSTART / "data", root / "data")
    (root / "model").symlink_to(QUICKSTART / "model", target_is_directory=True)
    write_components(root)
    (root / "less.yaml").write_text(YAML)
    return root


def _result(out):
    rounds = [
        (r["round"], r["indices"], r["scores"])
        for r in read_selections(out / "dataflex" / "selections.jsonl")
    ]
    return rounds, (out / "adapter_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    work = _work(tmp_path_factory.mktemp("uninterrupted"))
    old = os.getcwd()
    os.chdir(work)
    try:
        assert run_cli("train", "less.yaml").code == 0
    finally:
        os.chdir(old)
    return _result(work / "out")


def _assert_nothing_half_written_is_read(out):
    """Every file a later run reads is whole; incomplete checkpoints are the ones a resume skips."""
    resumed_from = last_complete_checkpoint(out)
    skipped = [p for p in out.glob("checkpoint-*") if checkpoint_problem(p) is not None]
    step = int(resumed_from.rsplit("-", 1)[-1])
    assert all(int(p.name.split("-")[1]) > step for p in skipped), (resumed_from, skipped)
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.name.endswith((".sha256", ".tmp")) or path.name == ".dataflex.lock":
            continue  # a leftover .tmp (SIGKILL mid-write) is never read: files are renamed into place
        if any(path.is_relative_to(p) for p in skipped):
            continue
        if sidecar(path).is_file():
            verify(path)
        elif path.suffix == ".safetensors":
            check_safetensors(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            check_torch_file(path)
        elif path.suffix == ".json":
            check_json_file(path)
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]


CASES = [  # SIGKILL at every point; SIGTERM and Ctrl-C unwind the same way, so once each
    # (point, signal, the checkpoint a resume continues from)
    ("optimizer-step:2", "KILL", "checkpoint-1"),  # mid warm-up
    ("feature-batch:2", "KILL", "checkpoint-1"),  # mid scoring pass of round 1 (end of step 2)
    ("feature-batch:2", "TERM", "checkpoint-1"),
    ("round-selected:3", "KILL", "checkpoint-2"),  # round 2 chosen (its features written), not recorded
    ("checkpoint-save:3", "KILL", "checkpoint-2"),  # checkpoint-3: the Trainer's files, no selection state
    ("checkpoint-save:3", "INT", "checkpoint-2"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "sig", "last"), CASES, ids=[f"{p}@{s}" for p, s, _ in CASES])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(
    uninterrupted, tmp_path, monkeypatch, point, sig, last
):
    work = _work(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["DATAFLEX_TEST_STOP_AT"] = f"{point}@{sig}"
    cmd = [sys.executable, "-m", "dataflex.cli", "train", "less.yaml"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == EXIT[sig], proc.stderr[-3000:]
    if sig != "KILL":  # it says what happened and how to go on, without a traceback
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "stopped by" in proc.stderr and "resume_from_checkpoint: true" in proc.stderr
        assert not (work / "out" / ".dataflex.lock").exists()  # released while unwinding
        assert not list(work.rglob("*.tmp"))  # temporary files removed while unwinding
    assert last_complete_checkpoint(work / "out") == str(work / "out" / last)  # it stopped where asked
    if point.startswith("checkpoint-save"):
        assert (work / "out" / "checkpoint-3" / "optimizer.pt").is_file()  # half a checkpoint, skipped
    _assert_nothing_half_written_is_read(work / "out")

    monkeypatch.chdir(work)
    result = run_cli("train", "less.yaml", "resume_from_checkpoint=true")
    assert result.code == 0, result.err
    assert _result(work / "out") == uninterrupted


def test_the_stop_hook_refuses_a_mistyped_point_or_signal(monkeypatch):
    monkeypatch.setenv(stop_points.ENV, "feature-bach:2")
    with pytest.raises(ValueError, match="unknown point 'feature-bach'"):
        stop_points.reached("feature-batch")
    monkeypatch.setenv(stop_points.ENV, "feature-batch@HUP")
    with pytest.raises(ValueError, match="unknown signal 'HUP'"):
        stop_points.reached("feature-batch")
    assert stop_points.parse("checkpoint-save:3@INT") == ("checkpoint-save", 3, signal.SIGINT)

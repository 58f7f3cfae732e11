"""Fixtures of the fault-injection and bad-input suite.

Every test runs in its own copy of the quickstart assets (``work``): the data folder,
a components file with a small LESS, and (a symlink to) the committed model. A test
snapshots that tree before and after the command and checks that nothing outside the
output folder changed, that the command exited as expected, and that no traceback was
printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataflex.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"

COMPONENTS = """\
selectors:
  less:
    name: less
    params:
      proj_dim: 32
      seed: 123
      subtask_field: {subtask_field}
      projector: {projector}
      repeat_across_rounds: {replacement}
  random:
    name: random
    params: {{}}
"""

LESS_YAML = """\
model_name_or_path: {model}
finetuning_type: lora
lora_target: all
lora_rank: 4
dataset: quickstart_train
dataset_dir: data
eval_dataset: quickstart_valid
template: default
cutoff_len: 64
max_samples: 24
output_dir: out
logging_steps: 1
save_steps: 1
per_device_train_batch_size: 4
learning_rate: 1.0e-3
report_to: none
train_type: dynamic_select
components_cfg_file: components.yaml
component_name: less
warmup_step: 1
update_step: 1
update_times: 2
"""


def write_components(
    folder: Path, subtask_field: str = "null", projector: str = "auto", replacement: str = "false"
):
    (folder / "components.yaml").write_text(
        COMPONENTS.format(subtask_field=subtask_field, projector=projector, replacement=replacement)
    )


@dataclass
class Result:
    """A CLI call's exit code and stderr."""

    code: int
    err: str


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """Relative path → (sha256, mode) of every file under ``root``, outside the ``skip`` folders."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip) or not p.is_file() or p.is_symlink():
            continue
        out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def private_copy(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of a module's trained work folder as the current folder (for one test to damage)."""
    work = tmp_path / "w"
    shutil.copytree(trained, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    return work


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A private copy of the quickstart assets as the current folder."""
    shutil.copytree(QUICKSTART / "data", tmp_path / "data")
    (tmp_path / "model").symlink_to(QUICKSTART / "model", target_is_directory=True)
    write_components(tmp_path)
    (tmp_path / "less.yaml").write_text(LESS_YAML.format(model="model"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    return tmp_path


def run_cli(*argv: str) -> Result:
    """``dataflex-cli argv`` in-process; its exit code and stderr (no traceback allowed)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    text = err.getvalue()
    assert "Traceback" not in text, text
    return Result(code, text)


@pytest.fixture
def refused(work, monkeypatch):
    """``refused(*argv, match=...)``: the command fails with ``match``, before any model loads,
    and changes nothing in the work folder."""

    def model_loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was found")

    monkeypatch.setattr("dataflex.train.runner.load_model", model_loaded)
    monkeypatch.setattr("dataflex.offline.select.load_model", model_loaded)

    def check(*argv: str, match: str) -> str:
        before = snapshot(work)
        result = run_cli(*argv)
        assert result.code == 1, result.err
        assert match in result.err, result.err
        assert snapshot(work) == before
        assert not (work / "out").exists() or not any((work / "out").iterdir())
        return result.err

    return check


@pytest.fixture
def warnings_seen(caplog):
    caplog.set_level(logging.WARNING)
    return caplog

"""Faults around a real (tiny) dynamic LESS run: incomplete checkpoints, truncated files,
resumes with other settings, overwriting an earlier run, the data report, permissions."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from dataflex.io import MARKER
from dataflex.train.dynamic import load_selection_state
from tests.reliability.conftest import (
    LESS_YAML,
    QUICKSTART,
    private_copy,
    run_cli,
    snapshot,
    write_components,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step LESS run (warm-up 1, two rounds of 1 step) with a checkpoint at every step."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(QUICKSTART / "data", root / "data")
    rows = json.loads((root / "data" / "train.json").read_text())
    rows.insert(3, {"instruction": 5, "output": "not text"})  # skipped when loading
    (root / "data" / "train.json").write_text(json.dumps(rows))
    (root / "model").symlink_to(QUICKSTART / "model", target_is_directory=True)
    write_components(root)
    (root / "less.yaml").write_text(LESS_YAML.format(model="model"))
    old_cwd, old_mask = os.getcwd(), os.umask(0o022)
    os.chdir(root)
    try:
        result = run_cli("train", "less.yaml")
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)
    assert result.code == 0, result.err
    return root


@pytest.fixture
def rerun(trained, tmp_path, monkeypatch):
    """A private copy of the trained work folder as the current folder."""
    return private_copy(trained, tmp_path, monkeypatch)


def test_the_data_report_counts_rows_skipped_at_load(trained):
    report = json.loads((trained / "out" / "data_report.json").read_text())
    assert report["train"]["skipped_at_load"] == {"instruction must be a string, got int": 1}
    assert report["train"]["rows_read"] == 24


def test_reports_respect_the_umask(trained):
    out = trained / "out"
    for path in (out / "data_report.json", out / "dataflex" / "selections.jsonl",
                 out / "checkpoint-3" / "dataflex_selection.json"):  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert json.loads((out / MARKER).read_text())["kind"] == "train"


def test_resume_true_skips_an_incomplete_checkpoint(rerun, caplog):
    caplog.set_level("INFO")
    state = rerun / "out" / "checkpoint-3" / "dataflex_selection.json"
    state.write_bytes(state.read_bytes()[:100])  # the disk filled while it was written
    result = run_cli("train", "less.yaml", "resume_from_checkpoint=true")
    assert result.code == 0, result.err
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-3" in caplog.text
    assert "resumed selection state at step 2" in caplog.text


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "dataflex_selection.json is damaged or was changed after dataflex wrote it"),
        ("no-checksum", "dataflex_selection.json is incomplete: its checksum file"),
        ("no-state", "has no dataflex_selection.json: either it was not written by a dynamic-selection run, "
                     "or it is incomplete"),
        ("adapter", "adapter_model.safetensors is truncated or damaged"),
    ],
)  # fmt: skip
def test_resume_from_a_damaged_checkpoint_names_the_file(rerun, damage, message):
    ckpt = rerun / "out" / "checkpoint-2"
    if damage == "truncate":
        path = ckpt / "dataflex_selection.json"
        path.write_bytes(path.read_bytes()[:-20])
    elif damage == "no-checksum":
        (ckpt / "dataflex_selection.json.sha256").unlink()
    elif damage == "no-state":
        (ckpt / "dataflex_selection.json").unlink()
    else:
        path = ckpt / "adapter_model.safetensors"
        path.write_bytes(path.read_bytes()[:-1000])
    before = snapshot(rerun)
    result = run_cli("train", "less.yaml", f"resume_from_checkpoint={ckpt}")
    assert result.code == 1 and message in result.err, result.err
    assert (
        snapshot(rerun, skip=("out",)) == snapshot(rerun, skip=("out",))
        and before.keys() <= snapshot(rerun).keys()
    )


def _shuffle_first_rows(work):
    path = work / "data" / "train.json"
    rows = json.loads(path.read_text())
    rows[:24] = rows[:24][::-1]
    path.write_text(json.dumps(rows))


def _change_proj_dim(work):
    path = work / "components.yaml"
    path.write_text(path.read_text().replace("proj_dim: 32", "proj_dim: 16"))


@pytest.mark.parametrize(
    ("change", "override", "message"),
    [
        (_shuffle_first_rows, None, "pool_digest="),
        (_change_proj_dim, None, "selector_params.proj_dim=32, this run has selector_params.proj_dim=16"),
        (
            None,
            "learning_rate=2e-3",
            "training.learning_rate=0.001, this run has training.learning_rate=0.002",
        ),
    ],
    ids=["shuffled-pool", "proj_dim", "learning_rate"],
)
def test_resume_with_other_settings_is_refused_naming_the_key(rerun, change, override, message):
    if change is not None:
        change(rerun)
    ckpt = rerun / "out" / "checkpoint-2"
    before = snapshot(rerun / "out")
    extra = [override] if override else []
    result = run_cli("train", "less.yaml", f"resume_from_checkpoint={ckpt}", *extra)
    assert result.code == 1 and f"cannot resume from {ckpt}" in result.err and message in result.err, (
        result.err
    )
    assert snapshot(rerun / "out") == before


def test_overwrite_clears_the_earlier_runs_checkpoints(rerun):
    result = run_cli("train", "less.yaml", "overwrite_output_dir=true", "save_steps=1000", "update_times=1")
    assert result.code == 0, result.err
    left = sorted((rerun / "out").glob("checkpoint-*"))
    assert [p.name for p in left] in ([], ["checkpoint-2"])  # the Trainer may save the last step
    for ckpt in left:  # ... then it is this run's (1 round), not the earlier run's (2 rounds)
        assert load_selection_state(ckpt)["schedule"]["update_times"] == 1


def test_overwrite_refuses_checkpoints_dataflex_did_not_write(rerun):
    (rerun / "out" / MARKER).unlink()
    before = snapshot(rerun)
    result = run_cli("train", "less.yaml", "overwrite_output_dir=true")
    assert result.code == 1 and "holds checkpoint folders of an earlier run" in result.err, result.err
    assert snapshot(rerun) == before

"""Nothing the user owns is deleted or overwritten: export, select, names, locks, permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from dataflex.errors import ConfigError
from dataflex.io import LOCK_FILE, MARKER, OutputLock
from dataflex.io.owned import safe_file_name
from tests.reliability.conftest import run_cli, snapshot

SELECT = (
    "model_name_or_path: model\ndataset: {dataset}\ndataset_dir: data\ncomponent_name: random\n"
    "components_cfg_file: components.yaml\nselect_count: 4\noutput_dir: {out}\nmax_samples: 24\n"
    "cutoff_len: 64\ntemplate: default\n"
)
EXPORT = "model_name_or_path: model\nexport_dir: {out}\nexport_size: 1\n"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- export ------------------------------------------------------------------------------


def test_export_refuses_a_folder_it_did_not_write(refused, work, monkeypatch):
    monkeypatch.setattr("dataflex.train.export.load_model", lambda *a, **k: pytest.fail("model loaded"))
    (work / "merged").mkdir()
    (work / "merged" / "notes.txt").write_text("my notes\n")
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    refused("export", "export.yaml", match="export_dir: ")
    err = run_cli("export", "export.yaml").err
    assert "was not written by dataflex-cli export" in err and "overwrite_export_dir: true" in err


def test_export_replaces_its_own_export_and_a_failed_export_keeps_it(work, monkeypatch, umask_022):
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    assert run_cli("export", "export.yaml").code == 0
    assert json.loads((work / "merged" / MARKER).read_text())["kind"] == "export"
    assert mode(work / "merged") == 0o755 and mode(work / "merged" / "model.safetensors") == 0o644
    first = snapshot(work / "merged")
    assert run_cli("export", "export.yaml").code == 0  # its own earlier export: replaced

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dataflex.train.export.write_marker", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_cli("export", "export.yaml")
    assert snapshot(work / "merged") == first  # the previous export is intact
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_export_overwrite_flag_keeps_the_users_files(work):
    (work / "merged").mkdir()
    (work / "merged" / "notes.txt").write_text("my notes\n")
    (work / "merged" / "sub").mkdir()
    (work / "merged" / "sub" / "results.csv").write_text("a,b\n")
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    assert run_cli("export", "export.yaml", "overwrite_export_dir=true").code == 0
    assert (work / "merged" / "notes.txt").read_text() == "my notes\n"
    assert (work / "merged" / "sub" / "results.csv").read_text() == "a,b\n"
    marker = json.loads((work / "merged" / MARKER).read_text())
    written = sorted(
        p.name for p in (work / "merged").iterdir() if p.name not in ("notes.txt", "sub", MARKER)
    )
    assert marker["files"] == written and "model.safetensors" in written
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_a_re_export_replaces_only_its_own_files(work):
    """An earlier export in 2 shards, then a file of the user's, then an export in 1 shard: the
    shards and index of the first are gone, the user's file stays, nothing else is left."""
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    assert run_cli("export", "export.yaml", "export_size=0.001").code == 0
    first = sorted(p.name for p in (work / "merged").iterdir())
    assert "model.safetensors.index.json" in first
    (work / "merged" / "notes.txt").write_text("my notes\n")
    assert run_cli("export", "export.yaml").code == 0  # its own folder: no flag needed
    names = sorted(p.name for p in (work / "merged").iterdir())
    marker = json.loads((work / "merged" / MARKER).read_text())
    assert names == sorted([*marker["files"], "notes.txt", MARKER])
    assert "model.safetensors" in names and not any(n.startswith("model-0") for n in names)
    assert (work / "merged" / "notes.txt").read_text() == "my notes\n"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(work / "merged")  # a whole, loadable export


def test_export_refuses_files_of_another_model_in_the_way(refused, work, monkeypatch):
    monkeypatch.setattr("dataflex.train.export.load_model", lambda *a, **k: pytest.fail("model loaded"))
    (work / "merged").mkdir()
    (work / "merged" / "config.json").write_text("{}")
    (work / "merged" / "notes.txt").write_text("my notes\n")
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    refused(
        "export", "export.yaml", "overwrite_export_dir=true",
        match="export_dir: 'merged' holds files that dataflex did not write and that a model loaded from "
        "it would also read (config.json)",
    )  # fmt: skip


def test_a_failed_in_place_export_puts_everything_back(work, monkeypatch):
    (work / "export.yaml").write_text(EXPORT.format(out="merged"))
    assert run_cli("export", "export.yaml").code == 0
    (work / "merged" / "notes.txt").write_text("my notes\n")
    before = snapshot(work / "merged")
    real_replace = os.replace
    calls = []

    def replace_fails_half_way(src, dst):
        calls.append(src)
        if len(calls) == 5:  # after the old files moved out and some new ones moved in
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr("dataflex.train.export.os.replace", replace_fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        run_cli("export", "export.yaml")
    assert len(calls) > 5  # it failed mid-way and moved files back
    assert snapshot(work / "merged") == before
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []


# --- select ------------------------------------------------------------------------------


def test_select_into_the_data_folder_keeps_its_dataset_info(refused, work):
    (work / "select.yaml").write_text(SELECT.format(dataset="quickstart_train", out="data"))
    refused("select", "select.yaml", match="output_dir: 'data' is not empty (dataset_info.json")


def test_select_refuses_a_dataset_name_that_leaves_the_output_folder(refused, work):
    info_path = work / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["../../escaped"] = info["quickstart_train"]
    info_path.write_text(json.dumps(info))
    (work / "select.yaml").write_text(SELECT.format(dataset="../../escaped", out="sel"))
    refused("select", "select.yaml", match="dataset '../../escaped': '../../escaped_selected' cannot become")


def test_select_writes_safe_names_and_may_replace_its_own_output(work, umask_022):
    info_path = work / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["my data:v2"] = info["quickstart_train"]
    info_path.write_text(json.dumps(info))
    (work / "select.yaml").write_text(SELECT.format(dataset="my data:v2", out="sel"))
    before = snapshot(work, skip=("sel",))
    assert run_cli("select", "select.yaml").code == 0
    assert run_cli("select", "select.yaml").code == 0  # its own output: replaced
    written = json.loads((work / "sel" / "dataset_info.json").read_text())
    assert written["my data:v2_selected"]["file_name"] == "my_data_v2_selected.json"
    assert mode(work / "sel" / "selection.json") == 0o644
    assert not (work / "sel" / LOCK_FILE).exists()
    assert snapshot(work, skip=("sel",)) == before


@pytest.mark.parametrize(
    ("name", "safe"),
    [("alpaca_en", "alpaca_en"), ("a b/c", "a_b_c"), (".hidden", "hidden"), ("x\\y", "x_y")],
)
def test_safe_file_name(name, safe):
    assert safe_file_name(name, "dataset") == safe


@pytest.mark.parametrize("name", ["..", "../x", "a/../../b", "/etc/passwd", "~/x", "", "  "])
def test_names_that_leave_the_folder_are_refused(name):
    with pytest.raises(ConfigError, match="cannot become a file name"):
        safe_file_name(name, "dataset")


# --- the output-folder lock --------------------------------------------------------------


def test_a_second_run_into_a_locked_output_dir_is_refused(work):
    (work / "out").mkdir()
    with OutputLock(work / "out"):
        before = snapshot(work)
        result = run_cli("train", "less.yaml", "update_times=1")
        assert result.code == 1
        assert f"'out' is in use by another dataflex run (pid {os.getpid()}" in result.err, result.err
        assert snapshot(work) == before
    assert not (work / "out" / LOCK_FILE).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with OutputLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.token
    assert "which no longer runs" in caplog.text


def test_a_lock_held_elsewhere_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "command": "x"}))
    with pytest.raises(ConfigError, match="in use by another dataflex run \\(pid 1 on another-host"):
        OutputLock(tmp_path).acquire()
    assert (tmp_path / LOCK_FILE).exists()


def test_the_trainer_shares_the_lock_its_own_process_holds(tmp_path):
    with OutputLock(tmp_path):  # dataflex-cli train
        with OutputLock(tmp_path, reentrant=True):  # the DynamicSelectTrainer inside it
            pass
        assert (tmp_path / LOCK_FILE).exists()  # still held by the outer one
        with pytest.raises(ConfigError, match="in use by another dataflex run"):
            OutputLock(tmp_path).acquire()  # a second run is still refused
    assert not (tmp_path / LOCK_FILE).exists()

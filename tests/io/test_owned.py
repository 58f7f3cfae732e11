"""Which files of a folder are dataflex's, and which folders an output may not overlap."""

from __future__ import annotations

import pytest

from dataflex.errors import ConfigError
from dataflex.io import LOCK_FILE, MARKER, check_no_overlap, foreign_entries, write_marker


def test_foreign_entries(tmp_path):
    assert foreign_entries(tmp_path / "absent", "export") == []
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / LOCK_FILE).write_text("{}")
    assert foreign_entries(tmp_path, "export") == ["config.json", "notes.txt"]  # unmarked: none is ours
    write_marker(tmp_path, "export", files=["config.json"])
    assert foreign_entries(tmp_path, "export") == ["notes.txt"]
    assert foreign_entries(tmp_path, "select") == ["config.json", "notes.txt"]  # another kind's marker
    write_marker(tmp_path, "export")  # an older dataflex: no record, the whole folder is its export
    assert foreign_entries(tmp_path, "export") == []
    assert (tmp_path / MARKER).is_file()


@pytest.mark.parametrize(
    ("output", "how"),
    [("model", "is the"), ("model/a/b", "is inside the"), (".", "contains the")],
)
def test_check_no_overlap(tmp_path, monkeypatch, output, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError, match=f"out_key: '{output}' {how} model_key folder 'model'"):
        check_no_overlap(output, "out_key", {"model_key": "model"})


def test_check_no_overlap_follows_symlinks_and_skips_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="'real/run' is inside the adapter folder 'link'"):
        check_no_overlap("real/run", "output_dir", {"hub": "Qwen/Qwen2.5-0.5B", "adapter": ["x", "link"]})
    check_no_overlap("realistic", "output_dir", {"model": "real", "hub": "Qwen/Qwen2.5-0.5B", "none": None})

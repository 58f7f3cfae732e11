"""Input folders are never written to: an output folder overlapping the model, an adapter or the
data folder is refused before the model loads, and a dataset registry cannot send a run to read
files outside its folder."""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import run_cli

EXPORT = "model_name_or_path: model\nexport_dir: {out}\nexport_size: 1\n"


@pytest.mark.parametrize(
    ("output_dir", "how", "key"),
    [
        ("model", "is the", "model_name_or_path"),
        ("model/run", "is inside the", "model_name_or_path"),
        ("data", "is the", "dataset_dir"),
        ("data/run", "is inside the", "dataset_dir"),
        (".", "contains the", "dataset_dir"),
    ],
)
def test_output_dir_overlapping_an_input_is_refused(refused, work, output_dir, how, key):
    refused(
        "train", "less.yaml", f"output_dir={output_dir}", "overwrite_output_dir=true",
        match=f"output_dir: {output_dir!r} {how} {key} folder",
    )  # fmt: skip


def test_output_dir_equal_to_the_adapter_is_refused(refused, work):
    (work / "adapter").mkdir()
    (work / "adapter" / "adapter_config.json").write_text("{}")
    refused(
        "train", "less.yaml", "output_dir=adapter", "adapter_name_or_path=adapter",
        "overwrite_output_dir=true",
        match="output_dir: 'adapter' is the adapter_name_or_path folder 'adapter'",
    )  # fmt: skip


def test_export_dir_overlapping_the_model_is_refused(refused, work, monkeypatch):
    monkeypatch.setattr("dataflex.train.export.load_model", lambda *a, **k: pytest.fail("model loaded"))
    (work / "export.yaml").write_text(EXPORT.format(out="model/merged"))
    refused(
        "export", "export.yaml", match="export_dir: 'model/merged' is inside the model_name_or_path folder"
    )


def _register(work, file_name):
    info_path = work / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["escaped"] = dict(info["quickstart_train"], file_name=file_name)
    info_path.write_text(json.dumps(info))


@pytest.mark.parametrize("absolute", [False, True])
def test_a_registry_file_name_outside_dataset_dir_is_refused(refused, work, absolute):
    (work / "secret").mkdir()
    (work / "secret" / "x.json").write_text((work / "data" / "train.json").read_text())
    name = str(work / "secret" / "x.json") if absolute else "../secret/x.json"
    _register(work, name)
    err = refused(
        "train", "less.yaml", "dataset=escaped", match=f"file_name {name!r} in data/dataset_info.json"
    )
    assert "points outside dataset_dir 'data'" in err
    direct = str(work / "secret" / "x.json") if absolute else "secret/x.json"
    assert f"(dataset: {direct})" in err


def test_a_registry_file_may_be_a_symlink_to_data_elsewhere(work):
    (work / "elsewhere").mkdir()
    (work / "elsewhere" / "x.json").write_text((work / "data" / "train.json").read_text())
    (work / "data" / "linked.json").symlink_to(work / "elsewhere" / "x.json")
    _register(work, "linked.json")
    from dataflex.data.dataset_info import resolve_dataset

    assert resolve_dataset("escaped", "data").path.resolve() == work / "elsewhere" / "x.json"


def test_a_dataset_file_named_in_the_config_may_lie_outside_dataset_dir(work):
    (work / "elsewhere").mkdir()
    (work / "elsewhere" / "x.json").write_text((work / "data" / "train.json").read_text())
    result = run_cli("train", "less.yaml", "dataset=elsewhere/x.json", "update_times=1")
    assert result.code == 0, result.err

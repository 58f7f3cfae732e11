"""Bad inputs of a training run are refused before training, leaving output_dir untouched."""

from __future__ import annotations

import pytest

from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART

SFT = QUICKSTART / "sft.yaml"


def _run(overrides: list[str]):
    return run_train(load_train_config(SFT, overrides))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["dataset=quickstart_trian"],
            r"dataset 'quickstart_trian' is not in .* Did you mean 'quickstart_train'",
        ),
        (["eval_dataset=nope.json"], r"dataset file 'nope.json' does not exist"),
        (
            ["model_name_or_path=./no/such/model"],
            r"model_name_or_path: the model path './no/such/model' does not exist",
        ),
        (["cutoff_len=1"], r"train dataset: no example left .* raise cutoff_len"),
        (["deepspeed=missing_ds.json"], r"deepspeed: the DeepSpeed config 'missing_ds.json' does not exist"),
        (
            ["resume_from_checkpoint=true"],
            r"resume_from_checkpoint: true, but output_dir .* has no checkpoint-",
        ),
        (
            ["resume_from_checkpoint=nowhere/checkpoint-5"],
            r"'nowhere/checkpoint-5' is not a checkpoint folder",
        ),
        (
            ["finetuning_type=lora", "lora_target=q_proj,qkv"],
            r"lora_target: the model has no linear module 'qkv'",
        ),
    ],
)
def test_bad_input_fails_before_training(quickstart_overrides, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        _run(quickstart_overrides + extra)
    assert not (tmp_path / "out").exists()


def test_model_folder_without_config(quickstart_overrides, tmp_path):
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ConfigError, match=r"has no config.json; point it at a model folder"):
        _run([*quickstart_overrides, f"model_name_or_path={tmp_path / 'empty_model'}"])


def test_hub_id_offline_is_a_clear_error(quickstart_overrides, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"'nobody/no-such-model' is not a local folder and not in the Hugging Face cache, and "
        r"HF_HUB_OFFLINE=1 forbids downloading it, so the hub was not asked",
    ):
        _run([*quickstart_overrides, "model_name_or_path=nobody/no-such-model"])
    assert not (tmp_path / "out").exists()


def test_non_empty_output_dir_needs_overwrite(quickstart_overrides, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError, match=r"output_dir: .* is not empty; set overwrite_output_dir: true"):
        _run([*quickstart_overrides, "overwrite_output_dir=false"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_data_with_bad_rows_fails_under_strict(quickstart_overrides, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]')
    with pytest.raises(ConfigError, match=r"row 1: empty answer"):
        _run(
            [*quickstart_overrides, f"dataset={bad}", "strict=true", "eval_dataset=null", "eval_strategy=no"]
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["models/my-llama", "saves/run 1", "a/b/c"])
def test_local_looking_model_path_never_asks_the_hub(tmp_path, monkeypatch, name):
    import transformers

    from dataflex.train.model import check_model_path

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was asked about {args[0]!r}")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    with pytest.raises(ConfigError, match=r"does not exist.*the hub was not asked"):
        check_model_path(name)

"""Bad inputs of the embedding selectors stop a training run before the model loads."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART


def _components(tmp_path, body: str):
    path = tmp_path / "components.yaml"
    path.write_text("selectors:\n" + body)
    return path


def _config(tmp_path, components, key, *extra):
    return load_train_config(
        QUICKSTART / "sft.yaml",
        [
            f"model_name_or_path={QUICKSTART / 'model'}",
            f"dataset_dir={QUICKSTART / 'data'}",
            f"output_dir={tmp_path / 'out'}",
            "max_samples=48",
            "eval_dataset=quickstart_valid",
            "train_type=dynamic_select",
            f"components_cfg_file={components}",
            f"component_name={key}",
            "update_step=1",
            "update_times=1",
            "per_device_train_batch_size=4",
            *extra,
        ],
    )


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("dataflex.train.runner.load_model", refuse)


def test_more_clusters_than_the_pool(tmp_path, no_model):
    comps = _components(tmp_path, "  cl:\n    name: cluster_less\n    params: {num_clusters: 64}\n")
    with pytest.raises(ConfigError, match="num_clusters is 64 but the pool has 48"):
        run_train(_config(tmp_path, comps, "cl"))


def test_embedding_file_of_the_wrong_shape(tmp_path, no_model):
    emb = tmp_path / "emb.safetensors"
    save_file({"train": torch.zeros(40, 8), "eval": torch.zeros(32, 8)}, str(emb))
    comps = _components(tmp_path, f"  nf:\n    name: near\n    params: {{embedding_file: {emb}}}\n")
    with pytest.raises(ConfigError, match="'train' has 40 rows but the pool has 48"):
        run_train(_config(tmp_path, comps, "nf"))
    save_file({"train": torch.zeros(48, 8), "eval": torch.zeros(32, 4)}, str(emb))
    with pytest.raises(ConfigError, match="dimension 8 but 'eval' has 4"):
        _config(tmp_path, comps, "nf")  # when the config is read


@pytest.mark.parametrize("name", ["near", "tsds", "cluster_less"])
def test_missing_eval_dataset(tmp_path, name):
    comps = _components(tmp_path, f"  s:\n    name: {name}\n    params: {{}}\n")
    with pytest.raises(ConfigError, match="eval_dataset"):
        _config(tmp_path, comps, "s", "eval_dataset=null")

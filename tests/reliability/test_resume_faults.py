"""Resuming and exporting from damaged or foreign checkpoints: each refused naming the file (or the
changed key) before the model loads, never a traceback from torch, safetensors or peft."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.reliability.conftest import (
    LESS_YAML,
    QUICKSTART,
    private_copy,
    run_cli,
    snapshot,
    write_components,
)

STATIC_YAML = (
    "\n".join(
        line
        for line in LESS_YAML.splitlines()
        if not line.startswith(
            ("train_type", "components_cfg_file", "component_name", "warmup_step", "update_")
        )
    )
    + "\nmax_steps: 3\n"
)
EXPORT = "model_name_or_path: model\nadapter_name_or_path: {adapter}\nexport_dir: merged\nexport_size: 1\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step dynamic LESS run and a 3-step static run, each with a checkpoint at every step."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(QUICKSTART / "data", root / "data")
    (root / "model").symlink_to(QUICKSTART / "model", target_is_directory=True)
    write_components(root)
    (root / "less.yaml").write_text(LESS_YAML.format(model="model"))
    (root / "static.yaml").write_text(
        STATIC_YAML.format(model="model").replace("output_dir: out", "output_dir: sft")
    )
    old_cwd = os.getcwd()
    os.chdir(root)
    try:
        for config in ("less.yaml", "static.yaml"):
            result = run_cli("train", config)
            assert result.code == 0, result.err
    finally:
        os.chdir(old_cwd)
    return root


@pytest.fixture
def rerun(trained, tmp_path, monkeypatch):
    """A private copy of the trained work folder as the current folder."""
    return private_copy(trained, tmp_path, monkeypatch)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the refusal must come first."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad checkpoint was found")

    for where in ("dataflex.train.runner.load_model", "dataflex.train.export.load_model"):
        monkeypatch.setattr(where, loaded)


def _reorder_pool(work):
    """The same 24 rows the runs trained on, in another order."""
    path = work / "data" / "train.json"
    rows = json.loads(path.read_text())
    rows[:24] = rows[1:24] + rows[:1]
    path.write_text(json.dumps(rows))


@pytest.mark.parametrize(("config", "out"), [("less.yaml", "out"), ("static.yaml", "sft")])
def test_a_reordered_pool_is_refused_before_the_model_loads(rerun, no_model, config, out):
    _reorder_pool(rerun)
    before = snapshot(rerun / out)
    result = run_cli("train", config, f"resume_from_checkpoint={out}/checkpoint-2")
    assert result.code == 1, result.err
    assert "pool_digest=" in result.err and "the training pool changed" in result.err, result.err
    assert snapshot(rerun / out) == before


def test_a_static_run_resumes_its_own_checkpoint(rerun):
    result = run_cli("train", "static.yaml", "resume_from_checkpoint=sft/checkpoint-2")
    assert result.code == 0, result.err
    assert (rerun / "sft" / "checkpoint-3" / "dataflex_run.json").is_file()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_rank(path):
    config = json.loads(path.read_text())
    config["r"] = 8  # the weights have rank 4
    path.write_text(json.dumps(config))


DAMAGE = [
    ("optimizer.pt", _truncate, "optimizer.pt is truncated or damaged"),
    ("scheduler.pt", _truncate, "scheduler.pt is truncated or damaged"),
    ("rng_state.pth", _truncate, "rng_state.pth is truncated or damaged"),
    ("trainer_state.json", _truncate, "trainer_state.json is not valid JSON"),
    ("trainer_state.json", lambda p: p.unlink(), "has no trainer_state.json"),
    ("adapter_model.safetensors", lambda p: p.unlink(), "has adapter_config.json but no adapter weights"),
    ("adapter_config.json", _other_rank, "adapter_config.json does not match its weights: it says r=8"),
]
DAMAGE_IDS = ["optimizer", "scheduler", "rng", "trainer-state", "no-trainer-state", "no-weights", "rank"]


@pytest.mark.parametrize(("name", "damage", "message"), DAMAGE, ids=DAMAGE_IDS)
@pytest.mark.parametrize(
    ("config", "out"), [("less.yaml", "out"), ("static.yaml", "sft")], ids=["dyn", "static"]
)
def test_a_damaged_checkpoint_file_is_named_before_the_model_loads(
    rerun, no_model, config, out, name, damage, message
):
    ckpt = rerun / out / "checkpoint-2"
    damage(ckpt / name)
    before = snapshot(rerun / out)
    result = run_cli("train", config, f"resume_from_checkpoint={ckpt}")
    assert result.code == 1, result.err
    assert f"cannot resume from {str(ckpt)!r}" in result.err and message in result.err, result.err
    assert "resume_from_checkpoint: true skips damaged ones" in result.err
    assert snapshot(rerun / out) == before


@pytest.mark.parametrize(
    ("config", "out"), [("less.yaml", "out"), ("static.yaml", "sft")], ids=["dyn", "static"]
)
def test_resume_true_skips_a_checkpoint_with_a_truncated_optimizer(rerun, caplog, config, out):
    caplog.set_level("INFO")
    _truncate(rerun / out / "checkpoint-3" / "optimizer.pt")
    result = run_cli("train", config, "resume_from_checkpoint=true")
    assert result.code == 0, result.err
    assert "skipping incomplete checkpoint" in caplog.text and "optimizer.pt is truncated" in caplog.text


def test_resume_true_skips_a_static_checkpoint_whose_record_was_not_finished(rerun, caplog):
    caplog.set_level("INFO")
    (rerun / "sft" / "checkpoint-3" / "dataflex_run.json.sha256").unlink()  # stopped between the two writes
    result = run_cli("train", "static.yaml", "resume_from_checkpoint=true")
    assert result.code == 0, result.err
    assert "skipping incomplete checkpoint" in caplog.text
    assert "dataflex_run.json is incomplete" in caplog.text


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: _truncate(a / "adapter_model.safetensors"), "adapter_model.safetensors is"),
        (lambda a: _other_rank(a / "adapter_config.json"), "adapter_config.json does not match its weights"),
        (lambda a: _truncate(a / "adapter_config.json"), "adapter_config.json is not valid JSON"),
    ],
    ids=["truncated-weights", "rank", "truncated-config"],
)
def test_export_names_a_damaged_adapter_before_the_model_loads(rerun, no_model, damage, message):
    damage(rerun / "out")
    (rerun / "export.yaml").write_text(EXPORT.format(adapter="out"))
    result = run_cli("export", "export.yaml")
    assert result.code == 1, result.err
    assert "adapter_name_or_path: 'out'" in result.err and message in result.err, result.err
    assert "Re-run the training that wrote it" in result.err
    assert not (rerun / "merged").exists()


def test_export_of_an_adapter_for_another_model_names_it(rerun, tmp_path):
    """Shapes that only the model can tell (another hidden size) fail while loading: named all the same."""
    from safetensors.torch import load_file, save_file

    weights = rerun / "out" / "adapter_model.safetensors"
    tensors = {k: (v if ".lora_A." not in k else v.repeat(1, 2)) for k, v in load_file(weights).items()}
    save_file(tensors, weights)
    (rerun / "export.yaml").write_text(EXPORT.format(adapter="out"))
    result = run_cli("export", "export.yaml")
    assert result.code == 1, result.err
    assert "adapter_name_or_path: 'out': its weights do not fit the model (size mismatch" in result.err, (
        result.err
    )
    assert not (rerun / "merged").exists()


def test_training_on_a_damaged_adapter_names_it_before_the_model_loads(rerun, no_model):
    _truncate(rerun / "sft" / "adapter_model.safetensors")
    result = run_cli("train", "static.yaml", "output_dir=again", "adapter_name_or_path=sft")
    assert result.code == 1, result.err
    assert "adapter_name_or_path: 'sft': sft/adapter_model.safetensors is" in result.err, result.err
    assert not (rerun / "again").exists()

"""The Trainer's ``fsdp`` / ``fsdp_config`` keys: what cannot work is refused before anything loads.

Each refusal names the key and the fix, and comes from config validation
(:func:`load_train_config`, before a torchrun relaunch) or, for what depends on the
process (a single process; LESS with full fine-tuning), from :func:`run_train` before
the model loads. transformers would accept most of these silently (``fsdp_config``
without ``fsdp``, unknown keys: the run trains with DDP) or refuse them only in the
Trainer, after the model loaded.
"""

from __future__ import annotations

import json

import pytest

from dataflex.cli import main
from dataflex.engines import check_fsdp_config, fsdp_enabled
from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART, REPO

LESS = QUICKSTART / "less.yaml"
SFT = QUICKSTART / "sft.yaml"
Z3 = str(REPO / "examples" / "deepspeed" / "ds_z3_config.json")

REFUSED = {
    "config-without-fsdp": (["fsdp_config={version: 2}"], "fsdp_config: is used only together with fsdp"),
    "fsdp1-version": (["fsdp=true", "fsdp_config={fsdp_version: 1}"], "asks for FSDP1"),
    "fsdp1-key": (["fsdp=true", "fsdp_config={use_orig_params: true}"], "['use_orig_params'] asks for FSDP1"),
    "bad-version": (["fsdp=true", "fsdp_config={version: 3}"], "version must be 2 (FSDP2); got 3"),
    "fsdp1-strategy": (["fsdp=hybrid_shard auto_wrap"], "'hybrid_shard' is an FSDP1 sharding strategy"),
    "unknown-option": (["fsdp=full_shrd"], "fsdp: unknown option 'full_shrd'"),
    "bad-fsdp-type": (["fsdp=3"], "fsdp: 3 is not an FSDP setting"),
    "typo-key": (
        ["fsdp=true", "fsdp_config={reshard_after_froward: false}"],
        "unknown key 'reshard_after_froward' (transformers would ignore it silently). Did you mean "
        "'reshard_after_forward'?",
    ),
    "accelerate-name": (
        ["fsdp=true", "fsdp_config={fsdp_offload_params: true}"],
        "That is accelerate config's name; TrainingArguments calls it cpu_offload.",
    ),
    "xla": (["fsdp=true", "fsdp_config={xla: true}"], "dataflex does not run on XLA"),
    "wrap-policy": (
        ["fsdp=true", "fsdp_config={auto_wrap_policy: LAYER_WRAP}"],
        "auto_wrap_policy must be one of TRANSFORMER_BASED_WRAP, SIZE_BASED_WRAP, NO_WRAP",
    ),
    "size-based-wrap": (
        ["fsdp=true", "fsdp_config={auto_wrap_policy: SIZE_BASED_WRAP, min_num_params: 100}"],
        "SIZE_BASED_WRAP is not supported: accelerate's FSDP2 size policy also wraps container modules",
    ),
    "with-deepspeed": (["fsdp=true", f"deepspeed={Z3}"], "fsdp: and deepspeed: are both set"),
    "offload-on-cpu": (["fsdp=full_shard offload"], "needs an accelerator: on this machine"),
    "offload-key-on-cpu": (["fsdp=true", "fsdp_config={cpu_offload: true}"], "needs an accelerator"),
    "activation-checkpointing-less": (
        ["fsdp=true", "fsdp_config={activation_checkpointing: true}"],
        "activation_checkpointing with the 'less' selector is not supported",
    ),
    "two-checkpointings": (
        ["fsdp=true", "fsdp_config={activation_checkpointing: true}", "gradient_checkpointing=true"],
        "recompute the same activations twice",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_in_config_validation(case, quickstart_overrides):
    overrides, message = REFUSED[case]
    with pytest.raises(ConfigError) as err:
        load_train_config(LESS, [*quickstart_overrides, *overrides])
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith(f"{LESS}: "), str(err.value)  # names the file


def test_fsdp_config_file_problems(tmp_path, quickstart_overrides):
    def refusal(value: str) -> str:
        with pytest.raises(ConfigError) as err:
            load_train_config(SFT, [*quickstart_overrides, "fsdp=true", f"fsdp_config={value}"])
        return str(err.value)

    assert "the FSDP config file" in refusal(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{version: 2")
    assert "is not valid JSON" in refusal(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[2]")
    assert "expected a mapping" in refusal(str(tmp_path / "list.json"))
    (tmp_path / "ok.json").write_text(json.dumps({"fsdp_version": 2, "fsdp_reshard_after_forward": True}))
    cfg = load_train_config(SFT, [*quickstart_overrides, "fsdp=true", f"fsdp_config={tmp_path / 'ok.json'}"])
    assert cfg.extra_training_args["fsdp_config"] == str(tmp_path / "ok.json")  # passed on as written


def test_what_is_accepted(quickstart_overrides):
    for overrides in (
        ["fsdp=true"],
        ["fsdp=full_shard auto_wrap", "fsdp_config={fsdp_version: 2}"],
        ["fsdp=shard_grad_op", "fsdp_config={auto_wrap_policy: NO_WRAP}"],
        ["fsdp=false", "gradient_checkpointing=true"],
    ):
        load_train_config(LESS, [*quickstart_overrides, *overrides])
    # full fine-tuning without a gradient selector may use FSDP's own activation checkpointing;
    # LoRA may not (an adapter saved under its wrappers came out empty)
    checkpointing = "fsdp_config={activation_checkpointing: true}"
    load_train_config(SFT, [*quickstart_overrides, "fsdp=true", checkpointing])  # sft.yaml: full
    with pytest.raises(ConfigError, match=r"activation_checkpointing with LoRA is not supported"):
        load_train_config(SFT, [*quickstart_overrides, "fsdp=true", checkpointing, "finetuning_type=lora"])
    assert fsdp_enabled(True) and fsdp_enabled("full_shard auto_wrap") and fsdp_enabled(["full_shard"])
    assert not fsdp_enabled(None) and not fsdp_enabled(False) and not fsdp_enabled("")


def test_offload_on_an_accelerator_depends_on_the_selector():
    common = {"deepspeed": None, "gradient_checkpointing": False, "has_accelerator": True}
    options = check_fsdp_config("full_shard offload", None, selector="loss", **common)
    assert options is not None and options.cpu_offload
    assert check_fsdp_config(True, {"cpu_offload": True}, selector=None, **common) is not None
    with pytest.raises(ConfigError, match=r"cpu_offload with the 'less' selector is not supported"):
        check_fsdp_config(True, {"fsdp_cpu_offload": "true"}, selector="less", **common)


def test_a_single_process_is_refused_before_the_model_loads(quickstart_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = load_train_config(LESS, [*quickstart_overrides, "fsdp=full_shard auto_wrap"])
    with pytest.raises(ConfigError, match=r"fsdp: FSDP shards the model over several processes.*torchrun"):
        run_train(cfg)
    assert not (tmp_path / "out").exists()


def test_less_with_full_finetuning_is_refused_before_the_model_loads(
    quickstart_overrides, tmp_path, monkeypatch
):
    monkeypatch.setenv("LOCAL_RANK", "0")  # as under torchrun: the check after the process count
    cfg = load_train_config(LESS, [*quickstart_overrides, "fsdp=true", "finetuning_type=full"])
    with pytest.raises(ConfigError, match=r"under FSDP2 is not supported.*Use finetuning_type: lora"):
        run_train(cfg)
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_one_line_and_exits_1(quickstart_overrides, capsys):
    code = main(["train", str(LESS), *quickstart_overrides, "fsdp=true", "fsdp_config={fsdp_version: 1}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "asks for FSDP1" in err and "Traceback" not in err, err

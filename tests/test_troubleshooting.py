"""Every error message docs/troubleshooting.md shows is the one dataflex prints.

The page marks each message with ``<!-- error: <id> -->`` before a ``text`` block. Each id
maps to a function here that triggers the error the way the page describes and returns
what the user sees (``dataflex-cli``'s stderr, or the exception's text). The shown message
must be contained in the real one; ``...`` in it stands for any text.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

from dataflex.cli import _stopped, main
from dataflex.data.collator import SFTDataCollator
from dataflex.errors import DataflexError
from dataflex.io import OutputLock, safe_file_name
from dataflex.registry import build_projector, build_selector
from dataflex.selectors import SelectionContext
from dataflex.train.adapter_files import check_adapter
from dataflex.train.checkpoints import check_resume
from dataflex.train.dynamic import (
    DynamicSelectTrainer,
    SelectionSchedule,
    load_selection_state,
    save_selection_state,
)
from dataflex.train.dynamic.resume import check_checkpoint_files, check_same_run
from dataflex.train.model import load_adapter
from tests.conftest import make_examples, make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
ENTRY = re.compile(r"<!-- error: ([\w-]+) -->\s*\n```text\n(.*?)\n```", re.S)
QUICKSTART_LESS = (ROOT / "examples" / "quickstart" / "less.yaml").read_text()

TRIGGERS: dict[str, Callable[[], str]] = {}


def trigger(entry_id: str):
    def decorator(fn: Callable[[], str]) -> Callable[[], str]:
        TRIGGERS[entry_id] = fn
        return fn

    return decorator


def cli(*overrides: str, config: str = QUICKSTART_LESS) -> str:
    """``dataflex-cli train cfg.yaml overrides...`` (cfg.yaml = ``config``); its stderr."""
    Path("cfg.yaml").write_text(config)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "cfg.yaml", *overrides])
    assert code == 1, f"dataflex-cli train exited {code}, not with an error"
    return err.getvalue()


def logged(fn: Callable[[], object]) -> str:
    """What ``fn`` logs to the ``dataflex`` logger (warnings and above)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("dataflex")
    logger.addHandler(handler)
    try:
        fn()
    finally:
        logger.removeHandler(handler)
    return "\n".join(r.getMessage() for r in records)


def raised(fn: Callable[[], object]) -> str:
    with pytest.raises((ValueError, DataflexError)) as info:
        fn()
    return str(info.value)


def pool(n: int = 16) -> list[dict]:
    return make_examples(n)


def context(eval_dataset=None) -> SelectionContext:
    return SelectionContext(
        model=make_tiny_llama(),
        optimizer=None,
        train_dataset=pool(),
        eval_dataset=eval_dataset,
        collator=SFTDataCollator(pad_token_id=0),
        learning_rate=1e-3,
        step=1,
        round=1,
        seed=0,
    )


def dynamic_trainer(**training_args) -> DynamicSelectTrainer:
    return DynamicSelectTrainer(
        model=make_tiny_llama(),
        args=TrainingArguments(
            output_dir="out", report_to=[], use_cpu=True, per_device_train_batch_size=4, **training_args
        ),
        train_dataset=pool(),
        data_collator=SFTDataCollator(pad_token_id=0),
        selector=build_selector("random"),
        schedule=SelectionSchedule(warmup_step=2, update_step=3, update_times=2),
    )


# --- config files ----------------------------------------------------------------------


@trigger("unknown-key")
def _():
    return cli(config=QUICKSTART_LESS + "lora_rnak: 8\n")


@trigger("unknown-override")
def _():
    return cli("lerning_rate=1e-3")


@trigger("bad-value")
def _():
    return cli("update_step=0")


@trigger("bad-type")
def _():
    return cli("lora_rank=abc")


@trigger("non-finite-value")
def _():
    return cli("learning_rate=.inf")


@trigger("learning-rate-too-large")
def _():
    return cli("learning_rate=1e308")


@trigger("selector-param-quoted-number")
def _():
    Path("q.yaml").write_text('selectors:\n  less:\n    name: less\n    params:\n      proj_dim: "512"\n')
    return cli("components_cfg_file=q.yaml")


@trigger("bf16-fp16")
def _():
    return cli("bf16=true", "fp16=true")


@trigger("eval-strategy-without-eval-dataset")
def _():
    return cli("eval_dataset=null", "train_type=static")


@trigger("template-unknown")
def _():
    return cli("template=llama")


@trigger("dynamic-key-missing")
def _():
    assert "update_times: 6\n" in QUICKSTART_LESS
    return cli(config=QUICKSTART_LESS.replace("update_times: 6\n", ""))


@trigger("less-without-eval-dataset")
def _():
    assert "eval_strategy: steps" in QUICKSTART_LESS  # LESS's need is said first, not the evaluation's
    return cli("eval_dataset=null")


@trigger("less-without-eval-dataset-python")
def _():
    return raised(lambda: build_selector("less", proj_dim=8).select(context(), 4))


@trigger("components-file-missing")
def _():
    return cli("components_cfg_file=my_components.yaml")


@trigger("component-name-unknown")
def _():
    return cli("component_name=lesss")


@trigger("selector-name-unknown")
def _():
    Path("bad_components.yaml").write_text("selectors:\n  mine:\n    name: shortest\n    params: {}\n")
    return cli("components_cfg_file=bad_components.yaml", "component_name=mine")


@trigger("selector-param-unknown")
def _():
    Path("bad_params.yaml").write_text(
        "selectors:\n  less:\n    name: less\n    params:\n      proj_dimm: 512\n"
    )
    return cli("components_cfg_file=bad_params.yaml")


@trigger("plugins-import")
def _():
    return cli("plugins=my_project.selectors")


@trigger("plugins-file-missing")
def _():
    return cli("plugins=my_selectors.py")


@trigger("torchrun-env")
def _():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORCE_TORCHRUN", "maybe")
        return cli()


@trigger("fsdp-config-without-fsdp")
def _():
    return cli("fsdp_config={version: 2}")


@trigger("fsdp-config-unknown-key")
def _():
    return cli("fsdp=true", "fsdp_config={fsdp_offload_params: true}")


@trigger("fsdp-option-unknown")
def _():
    return cli("fsdp=full_shrd")


@trigger("fsdp-not-a-setting")
def _():
    return cli("fsdp=3")


@trigger("fsdp-version")
def _():
    return cli("fsdp=true", "fsdp_config={version: 3}")


@trigger("fsdp-wrap-policy")
def _():
    return cli("fsdp=true", "fsdp_config={auto_wrap_policy: LAYER_WRAP}")


@trigger("fsdp-size-based-wrap")
def _():
    return cli("fsdp=true", "fsdp_config={auto_wrap_policy: SIZE_BASED_WRAP, min_num_params: 100}")


@trigger("fsdp-config-file-missing")
def _():
    return cli("fsdp=true", "fsdp_config=missing.json")


@trigger("fsdp-config-not-json")
def _():
    Path("bad.json").write_text("{version: 2")
    return cli("fsdp=true", "fsdp_config=bad.json")


@trigger("fsdp-config-not-a-mapping")
def _():
    Path("list.json").write_text("[2]")
    return cli("fsdp=true", "fsdp_config=list.json")


@trigger("fsdp1")
def _():
    return cli("fsdp=true", "fsdp_config={fsdp_version: 1}")


@trigger("fsdp1-strategy")
def _():
    return cli("fsdp=hybrid_shard auto_wrap")


@trigger("fsdp-with-deepspeed")
def _():
    return cli("fsdp=true", "deepspeed=examples/deepspeed/ds_z3_config.json")


@trigger("fsdp-two-checkpointings")
def _():
    return cli("fsdp=true", "fsdp_config={activation_checkpointing: true}", "gradient_checkpointing=true")


@trigger("fsdp-activation-checkpointing-less")
def _():
    return cli("fsdp=true", "fsdp_config={activation_checkpointing: true}")


@trigger("fsdp-offload-without-accelerator")
def _():
    return cli("fsdp=full_shard offload")


@trigger("fsdp-offload-less")
def _():
    from dataflex.engines import check_fsdp_config

    return raised(
        lambda: check_fsdp_config(
            True,
            {"cpu_offload": True},
            deepspeed=None,
            selector="less",
            gradient_checkpointing=False,
            has_accelerator=True,  # on this machine the accelerator check comes first
        )
    )


@trigger("fsdp-xla")
def _():
    return cli("fsdp=true", "fsdp_config={xla: true}")


@trigger("fsdp-single-process")
def _():
    return cli("fsdp=full_shard auto_wrap")


@trigger("fsdp-full-finetuning-less")
def _():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCAL_RANK", "0")  # as under torchrun, so that the process count passes
        return cli("fsdp=true", "finetuning_type=full")


# --- model and datasets ----------------------------------------------------------------


@trigger("model-path-missing")
def _():
    return cli("model_name_or_path=./models/llama")


@trigger("model-offline")
def _():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return cli("model_name_or_path=meta-llama/Llama-3.1-8B")


@trigger("model-hub-unreachable")
def _():
    import socket
    import time

    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # online, but no network
        mp.setattr(socket, "getaddrinfo", no_network)
        mp.setattr(time, "sleep", lambda seconds: pytest.fail("a retry waited"))
        return cli("model_name_or_path=meta-llama/Llama-3.1-8B")


@trigger("origin-config")
def _():
    from tests.train.conftest import SEED_LESS_YAML

    Path("elsewhere").mkdir()  # a folder without the original repository's examples/
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir("elsewhere")
        return cli(config=SEED_LESS_YAML)


@trigger("deepspeed-config-missing")
def _():
    return cli("deepspeed=ds_z3_config.json")


@trigger("adapter-missing")
def _():
    return cli("adapter_name_or_path=saves/old-run")


@trigger("dataset-unknown")
def _():
    return cli("dataset=quickstart_trian")


@trigger("dataset-info-missing")
def _():
    return cli("dataset_dir=data")


@trigger("dataset-file-outside-dataset-dir")
def _():
    shutil.copytree(ROOT / "examples" / "quickstart" / "data", "examples_data")
    info = json.loads(Path("examples_data/dataset_info.json").read_text())
    info["escaped"] = dict(info["quickstart_train"], file_name="../../secret/x.json")
    Path("examples_data/dataset_info.json").write_text(json.dumps(info))
    return cli("dataset_dir=examples_data", "dataset=escaped")


@trigger("dataset-columns")
def _():
    Path("rows.json").write_text(json.dumps([{"question": "1 + 1", "answer": "2"}]))
    return cli("dataset=rows.json")


@trigger("cutoff-len-empty")
def _():
    return cli("cutoff_len=4")


# --- output folder and resuming --------------------------------------------------------


@trigger("output-dir-not-empty")
def _():
    Path("saves/quickstart/less").mkdir(parents=True)
    Path("saves/quickstart/less/notes.txt").write_text("an earlier run\n")
    return cli("overwrite_output_dir=false")


@trigger("resume-checkpoint-missing")
def _():
    return cli("output_dir=saves/run", "resume_from_checkpoint=saves/run/checkpoint-40")


@trigger("resume-true-without-checkpoint")
def _():
    return cli("output_dir=saves/run", "resume_from_checkpoint=true")


@trigger("resume-without-selection-state")
def _():
    Path("out/checkpoint-2").mkdir(parents=True)  # e.g. a checkpoint of a static run
    Path("out/checkpoint-2/trainer_state.json").write_text("{}")
    return raised(lambda: dynamic_trainer().train(resume_from_checkpoint="out/checkpoint-2"))


@trigger("output-dir-foreign-checkpoints")
def _():
    Path("saves/quickstart/less/checkpoint-10").mkdir(parents=True)  # another tool's checkpoint
    return cli()


@trigger("output-dir-empty")
def _():
    return cli("output_dir=")


@trigger("output-dir-locked")
def _():
    with OutputLock("out"):  # the first run
        return raised(lambda: OutputLock("out").acquire())


def _saved_state() -> Path:
    folder = Path("out/checkpoint-2")
    save_selection_state(folder, {"round": 1, "scores": torch.ones(3)})
    return folder


@trigger("resume-damaged")
def _():
    state = _saved_state() / "dataflex_selection.json"
    state.write_bytes(state.read_bytes()[:-5])
    return raised(lambda: load_selection_state("out/checkpoint-2"))


@trigger("resume-incomplete")
def _():
    (_saved_state() / "dataflex_selection.json.sha256").unlink()
    return raised(lambda: load_selection_state("out/checkpoint-2"))


@trigger("resume-settings-changed")
def _():
    saved, this_run = {"selector_params": {"proj_dim": 512}}, {"selector_params": {"proj_dim": 256}}
    return raised(lambda: check_same_run(saved, this_run, "out/checkpoint-20"))


@trigger("resume-lora-rank")
def _():
    Path("ckpt").mkdir()
    Path("ckpt/adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 32, "lora_dropout": 0.0}))
    Path("ckpt/trainer_state.json").write_text("{}")
    save_file({"x.lora_A.weight": torch.zeros(8, 4)}, "ckpt/adapter_model.safetensors")
    return cli("resume_from_checkpoint=ckpt")


@trigger("resume-pool-changed")
def _():
    saved, this_run = {"pool_digest": "20572f70"}, {"pool_digest": "9da34899"}
    return raised(lambda: check_same_run(saved, this_run, "out/checkpoint-2"))


@trigger("resume-unchecked-static")
def _():
    Path("out/checkpoint-2").mkdir(parents=True)
    Path("out/checkpoint-2/trainer_state.json").write_text("{}")
    return logged(lambda: check_resume("out/checkpoint-2", None, None, None))


@trigger("resume-file-damaged")
def _():
    folder = Path("out/checkpoint-2")
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    torch.save({"state": torch.ones(100)}, folder / "optimizer.pt")
    (folder / "optimizer.pt").write_bytes((folder / "optimizer.pt").read_bytes()[:-100])
    return raised(lambda: check_checkpoint_files(folder))


def _lora_adapter(rank: int = 4) -> Path:
    from peft import LoraConfig, get_peft_model

    get_peft_model(make_tiny_llama(), LoraConfig(r=rank, target_modules=["q_proj"])).save_pretrained("out")
    return Path("out")


@trigger("adapter-rank-mismatch")
def _():
    config = _lora_adapter() / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 8}))
    return raised(lambda: check_adapter("out"))


@trigger("adapter-damaged")
def _():
    weights = _lora_adapter() / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return raised(lambda: check_adapter("out"))


@trigger("adapter-no-weights")
def _():
    (_lora_adapter() / "adapter_model.safetensors").unlink()
    return raised(lambda: check_adapter("out"))


@trigger("adapter-does-not-fit")
def _():
    _lora_adapter()
    return raised(lambda: load_adapter(make_tiny_llama(hidden_size=48), "out"))  # another base model


@trigger("interrupted")
def _():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _stopped("train", KeyboardInterrupt()) == 130
    return err.getvalue()


@trigger("export-dir-not-dataflex")
def _():
    Path("merged").mkdir()
    Path("merged/notes.txt").write_text("mine\n")
    Path("export.yaml").write_text(
        f"model_name_or_path: examples/quickstart/model\nexport_dir: {Path('merged').resolve()}\n"
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", "export.yaml"]) == 1
    return err.getvalue()


@trigger("export-dir-files-in-the-way")
def _():
    Path("merged").mkdir()
    Path("merged/config.json").write_text("{}")
    Path("merged/model.safetensors").write_bytes(b"")
    Path("export.yaml").write_text("model_name_or_path: examples/quickstart/model\nexport_dir: merged\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", "export.yaml", "overwrite_export_dir=true"]) == 1
    return err.getvalue()


@trigger("output-dir-overlaps-input")
def _():
    return cli("output_dir=examples/quickstart/model/run")


@trigger("select-output-not-empty")
def _():
    shutil.copytree(
        "examples/quickstart/data", "mydata", ignore=shutil.ignore_patterns("test.json", "valid.json")
    )
    Path("select.yaml").write_text(
        "model_name_or_path: examples/quickstart/model\ndataset: quickstart_train\ndataset_dir: mydata\n"
        "component_name: random\nselect_count: 4\noutput_dir: mydata\n"
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["select", "select.yaml"]) == 1
    return err.getvalue()


@trigger("name-leaves-output")
def _():
    return raised(lambda: safe_file_name("../../escaped_selected", "dataset '../../escaped'"))


# --- checked before the model loads ----------------------------------------------------


@trigger("pool-runs-dry")
def _():
    components = (ROOT / "examples" / "quickstart" / "components.yaml").read_text()
    once = components.replace("repeat_across_rounds: true", "repeat_across_rounds: false")
    Path("once.yaml").write_text(once)
    return cli("components_cfg_file=once.yaml", "update_times=27")


@trigger("proj-dim-memory")
def _():
    components = (ROOT / "examples" / "quickstart" / "components.yaml").read_text()
    Path("big.yaml").write_text(components.replace("proj_dim: 512", "proj_dim: 10000000000"))
    return cli("components_cfg_file=big.yaml")


@trigger("rescore-fraction-range")
def _():
    return raised(lambda: build_selector("less", rescore_fraction=0))


@trigger("rescore-fraction-too-small")
def _():
    components = (ROOT / "examples" / "quickstart" / "components.yaml").read_text()
    Path("few.yaml").write_text(components.replace("seed: 123", "seed: 123\n      rescore_fraction: 0.03"))
    return cli("components_cfg_file=few.yaml")


@trigger("report-to-missing")
def _():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
        return cli("report_to=wandb")


@trigger("subtask-field-missing")
def _():
    components = (ROOT / "examples" / "quickstart" / "components.yaml").read_text()
    Path("sub.yaml").write_text(
        components.replace("proj_dim: 512", "proj_dim: 512\n      subtask_field: category")
    )
    return cli("components_cfg_file=sub.yaml")


@trigger("max-steps-cli")
def _():
    return cli("max_steps=100")


@trigger("bf16-unsupported")
def _():
    with pytest.MonkeyPatch.context() as mp:  # an accelerator without bfloat16
        mp.setattr("dataflex.train.runner._has_accelerator", lambda: True)
        mp.setattr("dataflex.train.precision.bf16_supported", lambda: False)
        mp.setattr("torch.cuda.is_available", lambda: False)
        return cli("bf16=true")


@trigger("schedule-too-long")
def _():
    return cli("update_times=1000000000000")


@trigger("schedule-too-many-passes")
def _():
    return cli("update_times=100000")


@trigger("training-diverged")
def _():
    return cli(
        "learning_rate=10", "warmup_step=1", "update_step=1", "update_times=2", "max_samples=24",
        "cutoff_len=64", "per_device_train_batch_size=4", "eval_strategy=no", "plot_loss=false",
        "lora_rank=4", "lora_alpha=8", "template=default", "warmup_ratio=0", "lr_scheduler_type=linear",
    )  # fmt: skip


# --- files read wrong otherwise --------------------------------------------------------


@trigger("not-utf8")
def _():
    Path("latin1.yaml").write_bytes(QUICKSTART_LESS.encode() + "# r\xe9sum\xe9\n".encode("latin-1"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", "latin1.yaml"]) == 1
    return err.getvalue()


@trigger("duplicate-key")
def _():
    return cli(config=QUICKSTART_LESS + "lora_rank: 8\n")


@trigger("bool-for-number")
def _():
    return cli(config=QUICKSTART_LESS.replace("update_step: 5", "update_step: true"))


@trigger("dataset-info-unknown-key")
def _():
    Path("d").mkdir()
    Path("d/dataset_info.json").write_text(
        json.dumps({"mine": {"file_name": "x.json", "formating": "sharegpt"}})
    )
    return cli("dataset_dir=d", "dataset=mine", "eval_dataset=mine")


# --- schedule and budgets --------------------------------------------------------------


@trigger("max-steps-conflict")
def _():
    return raised(lambda: dynamic_trainer(max_steps=100))


@trigger("epoch-strategy")
def _():
    return raised(lambda: dynamic_trainer(save_strategy="epoch"))


@trigger("schedule-bad")
def _():
    return raised(lambda: SelectionSchedule(warmup_step=0, update_step=0, update_times=2))


@trigger("budget-pool-selector")
def _():
    return cli("max_samples=30")


@trigger("budget-random")
def _():
    return raised(lambda: build_selector("random").select(context(), 20))


@trigger("budget-exhausted")
def _():
    selector = build_selector("loss")
    selector.load_state_dict({"chosen": list(range(14))})  # what earlier rounds picked
    return raised(lambda: selector.select(context(), 4))


# --- projectors ------------------------------------------------------------------------


@trigger("projector-unknown")
def _():
    Path("p.yaml").write_text("selectors:\n  less:\n    name: less\n    params:\n      projector: gausian\n")
    return cli("components_cfg_file=p.yaml")


@trigger("projector-cuda")
def _():
    return raised(lambda: build_projector("cuda", input_dim=100, proj_dim=8, device="cpu"))


@trigger("projector-identity")
def _():
    return raised(lambda: build_projector("identity", input_dim=100, proj_dim=8))


@trigger("projector-nan")
def _():
    projector = build_projector("rademacher", input_dim=100, proj_dim=8)
    return raised(lambda: projector.project(torch.full((2, 100), float("nan"))))


@trigger("projector-outside")
def _():
    projector = build_projector("rademacher", input_dim=100, proj_dim=8)
    return raised(lambda: projector.project(torch.ones(2, 50), offset=60))


# --- LESS's gradient_modules -----------------------------------------------------------


@trigger("gradient-modules-none")
def _():
    selector = build_selector("less", projector="identity", gradient_modules=["*lora_B*"])
    return raised(lambda: selector.select(context(eval_dataset=pool(2)), 4))


@trigger("gradient-modules-sharded")
def _():
    ctx = context(eval_dataset=pool(2))
    next(ctx.model.parameters())._hp_mapping = None  # what ZeRO-1/2 attaches to each parameter
    selector = build_selector("less", projector="identity", gradient_modules=["*mlp*"])
    return raised(lambda: selector.select(ctx, 4))


# --- the checks ------------------------------------------------------------------------


def page_entries() -> dict[str, str]:
    entries = ENTRY.findall(PAGE.read_text())
    ids = [entry_id for entry_id, _ in entries]
    assert len(ids) == len(set(ids)), f"duplicate error ids on the page: {ids}"
    return dict(entries)


def shown_in(shown: str, real: str) -> bool:
    """``shown`` occurs in ``real``, each ``...`` matching any text."""
    pattern = ".*?".join(re.escape(part.strip()) for part in shown.split("..."))
    return re.search(pattern, real, re.S) is not None


def test_every_entry_has_a_trigger_and_every_trigger_an_entry():
    assert set(page_entries()) == set(TRIGGERS)


@pytest.mark.parametrize("entry_id", sorted(TRIGGERS))
def test_page_shows_the_real_message(entry_id, tmp_path, monkeypatch):
    shown = page_entries()[entry_id]
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    real = TRIGGERS[entry_id]()
    assert shown_in(shown, real), (
        f"docs/troubleshooting.md [{entry_id}] shows\n  {shown}\nbut dataflex says\n  {real}"
    )


def test_shown_in_matches_only_the_same_text():
    real = "x.yaml: lora_rnak: unknown key 'lora_rnak'. Did you mean 'lora_rank'?"
    assert shown_in("lora_rnak: unknown key 'lora_rnak'.", real)
    assert shown_in("x.yaml: ... Did you mean 'lora_rank'?", real)
    assert not shown_in("lora_rnak: unknown key 'lora_rank'.", real)
    assert not shown_in("Did you mean ... unknown key", real)

"""End to end: train the quickstart via the CLI, export the merged model, reload it and generate."""

from __future__ import annotations

import json
import logging
import math
from typing import ClassVar

import pytest
import torch
import yaml
from safetensors import safe_open

from dataflex.cli import main
from dataflex.registry import SELECTORS, register_selector
from dataflex.selectors.less import LessSelector
from dataflex.train.config import load_train_config
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART

SFT = str(QUICKSTART / "sft.yaml")
pytestmark = pytest.mark.slow


def test_train_export_reload_generate(tmp_path, quickstart_overrides, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    steps = [
        "finetuning_type=lora",
        "max_steps=4",
        "logging_steps=1",
        "eval_steps=2",
        "save_steps=2",
        "per_device_train_batch_size=4",
    ]
    assert main(["train", SFT, *quickstart_overrides, *steps]) == 0

    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_loss.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-2").is_dir()
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["by_dataset"] == {"quickstart_train": 48}
    assert sum(report["train"]["by_subtask"].values()) == 48
    assert report["eval"]["by_subtask"] == {"uppercase": 32}
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert [e["step"] for e in state["log_history"] if "eval_loss" in e][:2] == [2, 4]

    merged = tmp_path / "merged"
    merge_yaml = tmp_path / "merge.yaml"
    merge_yaml.write_text(
        f"model_name_or_path: {QUICKSTART / 'model'}\nadapter_name_or_path: {out}\n"
        f"export_dir: {merged}\nexport_size: 0.001\nexport_device: cpu\n"
    )
    capsys.readouterr()
    assert main(["export", str(merge_yaml)]) == 0
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("exported the merged model") == 1  # printed once
    shards = sorted(merged.glob("*.safetensors"))
    assert len(shards) > 1
    for shard in shards:  # every shard holds at most export_size GB of tensors
        with safe_open(shard, "pt") as f:
            assert sum(f.get_tensor(k).nbytes for k in f.keys()) <= 0.001e9  # noqa: SIM118
    assert not list(tmp_path.glob(".merged.tmp-*"))

    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    base = AutoModelForCausalLM.from_pretrained(QUICKSTART / "model")
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(QUICKSTART / "model"), out
    ).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Add the two numbers.\n12 + 30"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        merged_logits = model(ids).logits
        torch.testing.assert_close(merged_logits, adapted(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(merged_logits, base.eval()(ids).logits, atol=1e-4)
        generated = model.generate(ids, max_new_tokens=5, do_sample=False)
        # the merged model continues greedily exactly as base + adapter does
        assert torch.equal(generated, adapted.generate(ids, max_new_tokens=5, do_sample=False))
    assert generated.shape[1] == ids.shape[1] + 5 or generated[0, -1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("kind", "weights_file"), [("full", "model.safetensors"), ("lora", "adapter_model.safetensors")]
)
def test_same_seed_same_weights(tmp_path, quickstart_overrides, kind, weights_file):
    weights = []
    for run in ("a", "b"):
        overrides = [
            *quickstart_overrides,
            f"output_dir={tmp_path / run}",
            f"finetuning_type={kind}",
            "max_steps=2",
            "eval_strategy=no",
            "plot_loss=false",
            "per_device_train_batch_size=4",
        ]
        result = run_train(load_train_config(SFT, overrides))
        assert result.global_step == 2
        with safe_open(tmp_path / run / weights_file, "pt") as f:
            weights.append({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=0, rtol=0)
    if kind == "full":
        with safe_open(QUICKSTART / "model" / "model.safetensors", "pt") as f:
            changed = [k for k in f.keys() if not torch.equal(f.get_tensor(k), weights[0][k])]  # noqa: SIM118
        assert changed


class ProbeLess(LessSelector):
    """LESS that, at its first round, hooks the model to record how training runs from then on."""

    calls: ClassVar[list[dict]] = []  # class-level: the runner builds the instance
    rounds: ClassVar[list[dict]] = []

    def select(self, ctx, num_samples):
        model = ctx.model
        if not self.rounds:
            # the first decoder layer's q_proj: a checkpointed layer's recomputation in the
            # backward runs it again (a hook on the layer itself sits outside the checkpoint)
            q_proj = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
            q_proj.register_forward_hook(self._record)
        self.rounds.append(
            {
                "checkpointing": model.is_gradient_checkpointing,
                "base_dtype": next(p.dtype for p in model.parameters() if not p.requires_grad),
                "trainable_dtypes": {p.dtype for p in model.parameters() if p.requires_grad},
            }
        )
        selection = super().select(ctx, num_samples)
        self.rounds[-1].update(scores=selection.scores, cache_hit=selection.metadata["cache_hit"])
        return selection

    def _record(self, module, args, output):
        self.calls.append(
            {"training": module.training, "autocast": torch.is_autocast_enabled("cpu"), "dtype": output.dtype}
        )


@pytest.fixture
def probe_less():
    """``ProbeLess`` registered while the test runs, with fresh records."""
    register_selector("test_probe_less")(ProbeLess)
    ProbeLess.calls.clear()
    ProbeLess.rounds.clear()
    yield ProbeLess
    SELECTORS.unregister("test_probe_less")


def test_bf16_and_gradient_checkpointing_are_in_effect_and_less_scores_under_them(
    tmp_path, quickstart_overrides, probe_less, caplog
):
    components = tmp_path / "components.yaml"
    less = {"proj_dim": 32, "seed": 1, "repeat_across_rounds": True}
    selectors = {"less": {"name": "test_probe_less", "params": less}}
    components.write_text(yaml.safe_dump({"selectors": selectors}))
    overrides = [
        *quickstart_overrides,
        "finetuning_type=lora",
        "lora_target=q_proj,v_proj",
        "bf16=true",
        "logging_steps=1",
        "eval_strategy=no",
        "per_device_train_batch_size=4",
        "warmup_ratio=0",  # a warm-up's lr of 0 would weight round 1's scores by 0
        "train_type=dynamic_select",
        f"components_cfg_file={components}",
        "component_name=less",
        "eval_dataset=quickstart_valid",
        "warmup_step=1",
        "update_step=1",
        "update_times=2",
    ]
    plain = [*overrides, f"output_dir={tmp_path / 'plain'}", "plot_loss=false"]
    run_train(load_train_config(SFT, plain))
    without_checkpointing = [r["scores"] for r in probe_less.rounds]
    probe_less.calls.clear()
    probe_less.rounds.clear()
    caplog.set_level(logging.INFO)
    result = run_train(load_train_config(SFT, [*overrides, "gradient_checkpointing=true"]))
    assert result.global_step == 3
    assert "bf16: true, but there is no GPU/accelerator" in caplog.text  # the CPU warning, then autocast
    assert torch.isfinite(torch.tensor(result.training_loss))

    # the base weights are bf16, the adapter fp32, and the Trainer enabled checkpointing
    assert [r["checkpointing"] for r in probe_less.rounds] == [True, True]
    assert all(r["base_dtype"] == torch.bfloat16 for r in probe_less.rounds)
    assert all(r["trainable_dtypes"] == {torch.float32} for r in probe_less.rounds)
    # the training steps after round 1 (steps 1 and 2) ran under bf16 autocast, each layer
    # twice per step: the forward, then its recomputation in the backward
    train = [c for c in probe_less.calls if c["training"]]
    assert len(train) == 2 * 2
    assert all(c["autocast"] and c["dtype"] == torch.bfloat16 for c in train)
    # LESS scored both rounds under them: real, distinct scores, the same as without
    # checkpointing (it recomputes the same activations; LESS scores in eval mode)
    for r in probe_less.rounds:
        assert len(r["scores"]) == 4 and all(math.isfinite(s) and s != 0 for s in r["scores"])
        assert len(set(r["scores"])) == 4
    for r, scores in zip(probe_less.rounds, without_checkpointing, strict=True):
        assert r["scores"] == pytest.approx(scores, rel=1e-6) and not r["cache_hit"]

    with safe_open(tmp_path / "out" / "adapter_model.safetensors", "pt") as f:
        names = list(f.keys())
        assert names
        assert all(("q_proj" in k or "v_proj" in k) and "lora_" in k for k in names)
        assert all(f.get_tensor(k).dtype == torch.float32 for k in names)  # trainable params kept in fp32
    assert result.plots == [tmp_path / "out" / "training_loss.png"]

"""A run says each thing once, at the level it deserves: no third-party noise a user cannot act on.

DeepSpeed (imported by accelerate whenever it is installed) guessed "Setting accelerator to
CPU" on every CPU run, peft's read of a deprecated transformers property printed a
FutureWarning on every LoRA run, and LESS's per-round feature plan repeated its torch.func
note every round.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import torch

from dataflex import logging_utils
from dataflex.data.collator import SFTDataCollator
from dataflex.engines import cpu_deepspeed
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from dataflex.train.model import apply_finetuning
from tests.train.conftest import QUICKSTART, REPO

FALLBACK = "use the torch.func fallback"


def test_a_cpu_lora_run_prints_no_deepspeed_guess_and_no_future_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="default")
    overrides = [
        f"model_name_or_path={QUICKSTART / 'model'}",
        f"dataset_dir={QUICKSTART / 'data'}",
        f"components_cfg_file={QUICKSTART / 'components.yaml'}",
        f"output_dir={tmp_path / 'out'}",
        "warmup_step=1",
        "update_step=1",
        "update_times=1",
        "plot_loss=false",
        "eval_strategy=no",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "dataflex.cli", "train", str(QUICKSTART / "random.yaml"), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "trained 2 steps" in proc.stdout
    if not torch.cuda.is_available():
        assert "Setting accelerator to CPU" not in output
    assert "FutureWarning" not in output and "is_gradient_checkpointing" not in output


def test_name_cpu_for_deepspeed_sets_only_what_is_unset_and_only_without_an_accelerator(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(cpu_deepspeed, "has_accelerator", lambda: True)
    cpu_deepspeed.name_cpu_for_deepspeed()
    assert "DS_ACCELERATOR" not in os.environ  # a GPU machine: DeepSpeed detects it itself
    monkeypatch.setattr(cpu_deepspeed, "has_accelerator", lambda: False)
    cpu_deepspeed.name_cpu_for_deepspeed()
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")
    cpu_deepspeed.name_cpu_for_deepspeed()
    assert os.environ["DS_ACCELERATOR"] == "xpu"  # the user's choice is kept


def test_lora_wrapping_raises_no_future_warning_and_keeps_other_warnings(tiny_llama):
    model = tiny_llama()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_finetuning(model, "lora", lora_target=["all"], lora_rank=4, lora_alpha=8, lora_dropout=0.0)
        warnings.warn("a warning of the caller's own", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "is_gradient_checkpointing" in m], messages
    assert "a warning of the caller's own" in messages


def test_torch_func_fallback_is_said_once_over_two_less_rounds(tiny_llama, examples, caplog, fresh_once):
    model = tiny_llama(seed=1)  # full fine-tuning: the RMSNorm weights need the torch.func fallback
    pool, val = examples(6, seed=3), examples(2, seed=4)
    selector = build_selector("less", projector="identity", gradient_type="sgd", repeat_across_rounds=True)
    with caplog.at_level(logging.INFO, logger="dataflex"):
        for round_ in (1, 2, 3):
            ctx = SelectionContext(
                model=model,
                optimizer=None,
                train_dataset=pool,
                eval_dataset=val,
                collator=SFTDataCollator(pad_token_id=0),
                round=round_,
            )
            selector.select(ctx, 2)
    said = [r for r in caplog.records if FALLBACK in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.INFO
    assert "norm" in said[0].getMessage()


def test_log_once_says_a_message_once_and_counts_only_what_was_shown(caplog, fresh_once):
    logger = logging.getLogger("dataflex.tests.once")
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        logging_utils.log_once(logger, logging.INFO, "below the level: %s", "dropped")
    with caplog.at_level(logging.INFO, logger="dataflex"):
        for _ in range(3):
            logging_utils.log_once(logger, logging.INFO, "below the level: %s", "dropped")
            logging_utils.log_once(logger, logging.INFO, "note %d", 1)
        logging_utils.log_once(logger, logging.INFO, "note %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["below the level: dropped", "note 1", "note 2"]

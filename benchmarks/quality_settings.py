"""The two settings of the selection-quality benchmark: data, target splits and base model.

Each setting writes, under its work folder, a ``data/`` folder with a
``dataset_info.json`` (the pool, plus a validation and a held-out test split per
target) and a ``base/`` model: a tiny Llama trained briefly on the whole pool with
``dataflex-cli train``'s own code path (full fine-tuning), so that the LoRA runs
that follow start from a model whose gradients mean something.

* ``quickstart``: the offline quickstart's seven synthetic task families, with the
  target family ``uppercase`` cut to 9% of the pool.
* ``llamafactory``: LLaMA-Factory's demo datasets (alpaca_en + alpaca_zh + identity +
  glaive_toolcall_en), with a held-out slice of ``identity`` and of
  ``glaive_toolcall_en`` as the two targets and a byte-level BPE tokenizer trained
  locally on the pool.
* ``paraphrase``: seven synthetic families with paraphrased instructions, the target's
  validation and test phrasings absent from the pool, and a near-miss family
  (``benchmarks/paraphrase_mix.py``).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.quickstart.make_quickstart import FAMILIES, make_model, make_tokenizer

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


@dataclass(frozen=True)
class Target:
    """One target task: its validation split (selection) and held-out test split (evaluation).

    Attributes:
        name: Label of the target family in the pool (``dataset`` or ``subtask`` field).
        valid: ``dataset_info.json`` name of the validation split LESS scores against.
        test: ``dataset_info.json`` name of the held-out split, never seen by any arm.
        pool_share: Share of the pool that belongs to the target family.
    """

    name: str
    valid: str
    test: str
    pool_share: float


@dataclass(frozen=True)
class Setting:
    """Everything an arm needs to train and evaluate in one setting.

    Attributes:
        name: ``quickstart`` or ``llamafactory``.
        work: The setting's work folder.
        pool: ``dataset_info.json`` name of the pool.
        family_key: Example field that names an example's family (``subtask`` / ``dataset``).
        targets: The target tasks, run in turn.
        template: Chat template name.
        cutoff_len: Token budget per example.
        batch_size: Examples per optimizer step.
        learning_rate: LoRA learning rate of every arm.
        warmup_step: Steps before the first selection (seed schedule shape: = update_step).
        update_step: Steps per selection round.
        update_times: Selection rounds.
        pretrain_steps: Full fine-tuning steps of the base model on the pool.
        pool_size: Examples in the pool.
    """

    name: str
    work: Path
    pool: str
    family_key: str
    targets: tuple[Target, ...]
    template: str
    cutoff_len: int
    batch_size: int
    learning_rate: float
    warmup_step: int
    update_step: int
    update_times: int
    pretrain_steps: int
    pool_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def base_model(self) -> Path:
        return self.work / "base"

    @property
    def total_steps(self) -> int:
        return self.warmup_step + self.update_step * self.update_times

    @property
    def round_budget(self) -> int:
        return self.update_step * self.batch_size


# the training run of the synthetic settings (quickstart, paraphrase): 35 steps x 8 examples,
# warm-up 5, then 6 rounds of 5 steps (40 examples a round)
SYNTHETIC_RUN: dict[str, Any] = {
    "template": "tokenizer",
    "cutoff_len": 64,
    "batch_size": 8,
    "learning_rate": 5e-3,
    "warmup_step": 5,
    "update_step": 5,
    "update_times": 6,
}


def _write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _corpus_rows(texts: list[str]) -> list[dict]:
    """Rows in the shape ``make_tokenizer`` trains on."""
    return [{"instruction": t, "input": "", "output": ""} for t in texts]


def _pretrain(setting: Setting, seed: int) -> None:
    """Full fine-tuning of the random-init model on the whole pool (the real train path)."""
    from dataflex.train.config import load_train_config
    from dataflex.train.runner import run_train

    out = setting.work / "pretrain"
    cfg = load_train_config(
        None,
        [
            f"model_name_or_path={setting.work / 'init'}",
            "finetuning_type=full",
            f"dataset={setting.pool}",
            f"dataset_dir={setting.data_dir}",
            f"template={setting.template}",
            f"cutoff_len={setting.cutoff_len}",
            f"output_dir={out}",
            "overwrite_output_dir=true",
            f"per_device_train_batch_size={setting.batch_size * 2}",
            "learning_rate=3e-3",
            "lr_scheduler_type=cosine",
            "warmup_ratio=0.1",
            f"max_steps={setting.pretrain_steps}",
            f"save_steps={setting.pretrain_steps * 10}",
            f"logging_steps={max(1, setting.pretrain_steps // 4)}",
            "plot_loss=false",
            f"seed={seed}",
        ],
    )
    run_train(cfg)
    if setting.base_model.exists():
        shutil.rmtree(setting.base_model)
    setting.base_model.mkdir(parents=True)
    for item in out.iterdir():
        if item.is_file() and not item.name.startswith(("training_args", "trainer_state", "all_results")):
            shutil.copy2(item, setting.base_model / item.name)
    shutil.rmtree(out)


def _held_out(family: str, pool: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` fresh rows of ``family`` whose (instruction, input) is not in the pool."""
    rng = random.Random(seed)
    seen = {(r["instruction"], r["input"]) for r in pool}
    rows: list[dict] = []
    while len(rows) < n:
        row = {**FAMILIES[family](rng), "task": family}
        if (row["instruction"], row["input"]) not in seen:
            seen.add((row["instruction"], row["input"]))
            rows.append(row)
    return rows


def quickstart_setting(
    work: Path, target: str = "uppercase", target_count: int = 90, pretrain_steps: int = 120
) -> Setting:
    """The quickstart's seven families; ``target`` cut to ``target_count`` rows of the pool.

    The default target, ``uppercase``, is one a 0.5M-parameter model can learn in a few
    dozen steps (``arithmetic`` needs sums it cannot compute, so its
    loss barely moves whatever the data); validation and test rows are fresh draws of
    the family that are not in the pool.
    """
    rows = json.loads((QUICKSTART / "data" / "train.json").read_text())
    kept = [r for r in rows if r["task"] == target][:target_count]
    pool = [r for r in rows if r["task"] != target] + kept
    random.Random(0).shuffle(pool)
    setting = Setting(
        name="quickstart",
        work=work,
        pool="pool",
        family_key="subtask",
        targets=(Target(target, f"{target}_valid", f"{target}_test", len(kept) / len(pool)),),
        **SYNTHETIC_RUN,
        pretrain_steps=pretrain_steps,
        pool_size=len(pool),
    )
    if (setting.base_model / "config.json").is_file():
        return setting
    setting.data_dir.mkdir(parents=True, exist_ok=True)
    columns = {**ALPACA_COLUMNS, "subtask": "task"}
    splits = {
        "pool": pool,
        f"{target}_valid": _held_out(target, pool, 32, seed=1),
        f"{target}_test": _held_out(target, pool, 100, seed=2),
    }
    for name, split in splits.items():
        _write_json(setting.data_dir / f"{name}.json", split)
    info = {name: {"file_name": f"{name}.json", "columns": columns} for name in splits}
    (setting.data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    # the random init of the quickstart model (the committed one is already pre-trained)
    from transformers import AutoTokenizer

    make_model(AutoTokenizer.from_pretrained(QUICKSTART / "model"), work / "init", seed=0)
    _pretrain(setting, seed=0)
    return setting


# held-out rows per target: (validation, test); the rest of the dataset stays in the pool.
LF_HELD_OUT = {"identity": (12, 12), "glaive_toolcall_en_demo": (24, 48)}
LF_POOL = ("alpaca_en_demo", "alpaca_zh_demo", "identity", "glaive_toolcall_en_demo")
# rows of each dataset kept in the pool (seeded draw): scoring every pool example each
# round is what lets LESS reach a rare target, and 2 CPU cores score ~1,200 in seconds.
# glaive is capped so that each target is at most 10% of the pool.
LF_POOL_ROWS = {"alpaca_en_demo": 300, "alpaca_zh_demo": 300, "identity": 67, "glaive_toolcall_en_demo": 70}


def _texts(row: dict) -> list[str]:
    """Every string of a raw Alpaca or ShareGPT row (tokenizer corpus)."""
    out: list[str] = []
    for value in row.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [turn.get("value", "") for turn in value if isinstance(turn, dict)]
    return out


def llamafactory_setting(
    work: Path,
    shared: Path,
    pretrain_steps: int = 120,
    target_names: tuple[str, ...] = ("identity", "glaive_toolcall_en_demo"),
) -> Setting:
    """LLaMA-Factory's demo datasets as the pool; ``identity`` and ``glaive_toolcall_en`` targets."""
    info = json.loads((shared / "dataset_info.json").read_text())
    raw = {name: json.loads((shared / info[name]["file_name"]).read_text()) for name in LF_POOL}
    rng = random.Random(0)
    pool_rows: dict[str, list[dict]] = {}
    held: dict[str, tuple[list[dict], list[dict]]] = {}
    for name in LF_POOL:
        rows = list(raw[name])
        if name in LF_HELD_OUT:
            rng.shuffle(rows)
            n_valid, n_test = LF_HELD_OUT[name]
            held[name] = (rows[:n_valid], rows[n_valid : n_valid + n_test])
            rows = rows[n_valid + n_test :]
        pool_rows[name] = rng.sample(rows, min(len(rows), LF_POOL_ROWS[name]))
    pool_size = sum(len(r) for r in pool_rows.values())
    targets = tuple(
        Target(name, f"{name}_valid", f"{name}_test", len(pool_rows[name]) / pool_size)
        for name in target_names
    )
    setting = Setting(
        name="llamafactory",
        work=work,
        pool=",".join(LF_POOL),
        family_key="dataset",
        targets=targets,
        template="chatml",
        cutoff_len=64,
        batch_size=8,
        learning_rate=1e-2,
        warmup_step=3,
        update_step=3,
        update_times=5,
        pretrain_steps=pretrain_steps,
        pool_size=pool_size,
    )
    if (setting.base_model / "config.json").is_file():
        return setting
    setting.data_dir.mkdir(parents=True, exist_ok=True)
    out_info: dict[str, Any] = {}
    for name in LF_POOL:
        entry = {k: v for k, v in info[name].items() if k != "file_name"}
        _write_json(setting.data_dir / f"{name}.json", pool_rows[name])
        out_info[name] = {"file_name": f"{name}.json", **entry}
        if name in held:
            for split, rows in zip(("valid", "test"), held[name]):
                _write_json(setting.data_dir / f"{name}_{split}.json", rows)
                out_info[f"{name}_{split}"] = {"file_name": f"{name}_{split}.json", **entry}
    (setting.data_dir / "dataset_info.json").write_text(json.dumps(out_info, indent=2) + "\n")
    corpus = [t for rows in pool_rows.values() for row in rows for t in _texts(row)]
    tokenizer = make_tokenizer(_corpus_rows(corpus), vocab_size=4096)
    make_model(tokenizer, work / "init", seed=0)
    _pretrain(setting, seed=0)
    return setting


# validation splits of the paraphrase setting: name -> (rows of the 128 drawn, subtask column)
PARAPHRASE_VALID = {
    "uppercase_valid": (32, "task"),
    "uppercase_valid8": (8, "task"),
    "uppercase_valid128": (128, "task"),
    "uppercase_valid_by_phrasing": (32, "phrasing"),  # subtask = the validation phrasing
    "uppercase_valid128_by_phrasing": (128, "phrasing"),
}


def paraphrase_setting(work: Path, pretrain_steps: int = 120, seed: int = 0) -> Setting:
    """Seven paraphrased families, target ``uppercase`` (8.8%), near miss ``reverse_order``.

    The validation and test phrasings of the target never occur in the pool; the
    tokenizer (a tokenizer knows the language, not the data) is trained on the text
    of all three splits, the base model only on the pool.
    """
    from benchmarks.paraphrase_mix import NEAR_MISS, TARGET, make_splits

    splits = make_splits(seed)
    pool = splits["pool"]
    share = sum(r["task"] == TARGET for r in pool) / len(pool)
    setting = Setting(
        name="paraphrase",
        work=work,
        pool="pool",
        family_key="subtask",
        targets=(Target(TARGET, f"{TARGET}_valid", f"{TARGET}_test", share),),
        **SYNTHETIC_RUN,
        pretrain_steps=pretrain_steps,
        pool_size=len(pool),
        extra={"near_miss": NEAR_MISS},
    )
    # the data is cheap and deterministic: always written (a new validation split appears
    # in an existing work folder); the base model only once
    setting.data_dir.mkdir(parents=True, exist_ok=True)
    files = {"pool": pool, f"{TARGET}_test": splits["test"]}
    for name, rows in files.items():
        _write_json(setting.data_dir / f"{name}.json", rows)
    by_task = {**ALPACA_COLUMNS, "subtask": "task"}
    info: dict[str, Any] = {name: {"file_name": f"{name}.json", "columns": by_task} for name in files}
    for name, (n, column) in PARAPHRASE_VALID.items():
        _write_json(setting.data_dir / f"{name}.json", splits["valid"][:n])
        info[name] = {"file_name": f"{name}.json", "columns": {**ALPACA_COLUMNS, "subtask": column}}
    (setting.data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    if (setting.base_model / "config.json").is_file():
        return setting
    tokenizer = make_tokenizer([r for rows in splits.values() for r in rows], vocab_size=1024)
    make_model(tokenizer, work / "init", seed=0)
    _pretrain(setting, seed=0)
    return setting

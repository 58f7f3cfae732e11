"""One arm of the selection-quality benchmark: train as a user would, then measure.

Every arm trains a fresh LoRA on the setting's base model for the same number of
optimizer steps and examples (``warmup_step + update_step × update_times`` steps of
``batch_size``), through ``dataflex.train``'s own ``run_train`` (what
``dataflex-cli train`` runs):

* ``less``, ``random``, ``loss``, ``delta_loss``, ``nice``, ``near``, ``tsds``, ``cluster_less``:
  dynamic selection with that selector (``nice``'s generation time is in
  ``extra["generation_s"]``, the embedding selectors' embedding time in ``extra["embeddings_s"]``,
  both counted in ``selection_other_s``; cluster_less's share of LESS's feature rows in
  ``extra["feature_share"]``).
* ``full``: a plain run over the whole pool (no selection).
* ``less_offline``: the LESS paper's workflow — a warm-up LoRA run of ``warmup_step``
  steps on the pool, ``dataflex-cli select``'s code on its checkpoint (one round's
  worth of examples), then a fresh LoRA trained on the chosen subset.

After training, the target's validation and held-out test losses are computed on
the saved adapter (token-weighted mean cross-entropy over the response tokens).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.less_variants import VARIANTS
from benchmarks.quality_settings import Setting, Target
from dataflex.train.dynamic.reports import SELECTIONS_FILE, read_selections

ARMS = (
    "less",
    "random",
    "loss",
    "full",
    "less_offline",
    "delta_loss",
    "nice",
    "near",
    "tsds",
    "cluster_less",
)

COMPONENTS = """\
selectors:
  less:
    name: less
    params:
      gradient_type: adam
      proj_dim: 512
      repeat_across_rounds: true     # an example may be picked again in a later round
      batch_size: 16
  loss:
    name: loss
    params:
      focus: high
      repeat_across_rounds: true
      batch_size: 16
  random:
    name: random
    params:
      repeat_within_round: true
  delta_loss:
    name: delta_loss
    params:
      window_size: 0.2      # the original's default
      steepness: 10.0
      repeat_across_rounds: true
      batch_size: 16
  nice:
    name: nice
    params:
      gradient_type: adam
      proj_dim: 512
      metric: rouge_l       # graded, so that the samples of a prompt get different rewards
      mc_samples: 4
      max_new_tokens: 24
      temperature: 0.7
      repeat_across_rounds: true
      batch_size: 16
  near:
    name: near
    params:
      repeat_across_rounds: true
      batch_size: 16
  tsds:
    name: tsds
    params:
      repeat_across_rounds: true
      batch_size: 16
  cluster_less:
    name: cluster_less
    params:
      num_clusters: 16      # 16 x 16 representatives get LESS features instead of every candidate
      representatives: 16   # 4 halves the feature cost again but scores clusters too noisily here
      gradient_type: adam
      proj_dim: 512
      repeat_across_rounds: true
      batch_size: 16
"""


@dataclass
class ArmResult:
    """What one (arm, seed) run measured.

    Attributes:
        arm: Arm name.
        seed: Run seed.
        precision: Share of the target family among the examples each round chose
            (for ``full``: among all examples of the pool).
        valid_loss: Target validation loss after training.
        test_loss: Target held-out test loss after training.
        wall_s: Wall time of the arm end to end (setup, training, selection, saving).
        train_s: Optimizer steps (forward, backward, update) and their data loading.
        features_s: Per-example gradient features (candidates and validation).
        scoring_s: Similarities and top-k.
        selection_other_s: The rest of the selection rounds (candidate draw, report, ...).
        warmup_s: ``less_offline`` only: the warm-up run before selecting.
        run_share: Share of the target family among every example trained on over the run
            (warm-up included; ``full``: the pool share; ``less_offline``: the subset's).
    """

    arm: str
    seed: int
    precision: list[float]
    valid_loss: float
    test_loss: float
    wall_s: float
    train_s: float
    features_s: float = 0.0
    scoring_s: float = 0.0
    selection_other_s: float = 0.0
    warmup_s: float = 0.0
    run_share: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _common(setting: Setting, model: Path | str, out: Path, seed: int) -> list[str]:
    return [
        f"model_name_or_path={model}",
        "finetuning_type=lora",
        "lora_target=all",
        "lora_rank=16",
        "lora_alpha=32",
        f"dataset_dir={setting.data_dir}",
        f"template={setting.template}",
        f"cutoff_len={setting.cutoff_len}",
        f"output_dir={out}",
        "overwrite_output_dir=true",
        f"per_device_train_batch_size={setting.batch_size}",
        f"learning_rate={setting.learning_rate}",
        "lr_scheduler_type=cosine",
        "warmup_ratio=0.1",
        "save_steps=100000",
        f"logging_steps={setting.update_step}",
        "plot_loss=false",
        "eval_strategy=no",
        f"seed={seed}",
    ]


def _train(overrides: list[str]) -> tuple[Any, float]:
    from dataflex.train.config import load_train_config
    from dataflex.train.runner import run_train

    cfg = load_train_config(None, overrides)
    t0 = time.perf_counter()
    result = run_train(cfg)
    return result, time.perf_counter() - t0


@torch.no_grad()
def target_loss(setting: Setting, adapter: Path, dataset: str) -> float:
    """Token-weighted mean loss of base + ``adapter`` on ``dataset``'s response tokens."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflex.data import SFTDataCollator, get_template, load_dataset_examples, tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(setting.base_model)
    model = AutoModelForCausalLM.from_pretrained(setting.base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    rows = load_dataset_examples(dataset, setting.data_dir)
    examples, _ = tokenize_examples(
        rows, tokenizer, get_template(setting.template, tokenizer), setting.cutoff_len
    )
    collate = SFTDataCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    for start in range(0, len(examples), 16):
        batch = collate(examples[start : start + 16])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((labels != -100).sum())
    return total / count


def components_text() -> str:
    """The benchmark's components: the arms' selectors and every LESS variant."""
    base = yaml.safe_load(COMPONENTS)
    less = base["selectors"]["less"]["params"]
    for name, variant in VARIANTS.items():
        base["selectors"][name] = {"name": "less", "params": {**less, **variant.params}}
    return yaml.safe_dump(base, sort_keys=False)


def _components(setting: Setting) -> Path:
    """The benchmark's components file, in the setting's work folder."""
    path = setting.work / "components.yaml"
    path.write_text(components_text())
    return path


def _share(counts: dict[str, int] | None, target: str) -> float:
    if not counts:
        return float("nan")
    return counts.get(target, 0) / sum(counts.values())


def _dynamic(
    setting: Setting, target: Target, arm: str, seed: int, out: Path, eval_dataset: str | None = None
) -> ArmResult:
    components = _components(setting)
    result, wall = _train(
        [
            *_common(setting, setting.base_model, out, seed),
            f"dataset={setting.pool}",
            f"eval_dataset={eval_dataset or target.valid}",
            "train_type=dynamic_select",
            f"components_cfg_file={components}",
            f"component_name={arm}",
            f"warmup_step={setting.warmup_step}",
            f"update_step={setting.update_step}",
            f"update_times={setting.update_times}",
        ]
    )
    records = read_selections(out / "dataflex" / SELECTIONS_FILE)
    rounds = [r for r in records if r["round"] >= 1]
    key = "composition" if setting.family_key == "dataset" else "subtasks"
    trained = [r[key] or {} for r in records]
    run_share = sum(c.get(target.name, 0) for c in trained) / max(1, sum(sum(c.values()) for c in trained))
    meta = [r.get("metadata") or {} for r in rounds]
    selection = sum(r["time"] for r in rounds)
    features = sum(m.get("time_features_s", 0.0) for m in meta)
    scoring = sum(m.get("time_scoring_s", 0.0) for m in meta)
    train_runtime = float(result.metrics["train_runtime"])
    extra: dict[str, Any] = {}
    if any("time_generation_s" in m for m in meta):
        extra["generation_s"] = sum(m.get("time_generation_s", 0.0) for m in meta)
    if any("time_embeddings_s" in m for m in meta):
        extra["embeddings_s"] = sum(m.get("time_embeddings_s", 0.0) for m in meta)
    if any("feature_share" in m for m in meta):
        extra["feature_share"] = [m["feature_share"] for m in meta]
    return ArmResult(
        arm=arm,
        seed=seed,
        precision=[_share(r[key], target.name) for r in rounds],
        valid_loss=target_loss(setting, out, target.valid),
        test_loss=target_loss(setting, out, target.test),
        wall_s=wall,
        train_s=train_runtime - selection,
        features_s=features,
        scoring_s=scoring,
        selection_other_s=selection - features - scoring,
        run_share=run_share,
        extra=extra,
    )


def _full(setting: Setting, target: Target, seed: int, out: Path) -> ArmResult:
    result, wall = _train(
        [
            *_common(setting, setting.base_model, out, seed),
            f"dataset={setting.pool}",
            f"max_steps={setting.total_steps}",
        ]
    )
    return ArmResult(
        arm="full",
        seed=seed,
        precision=[target.pool_share],
        valid_loss=target_loss(setting, out, target.valid),
        test_loss=target_loss(setting, out, target.test),
        wall_s=wall,
        train_s=float(result.metrics["train_runtime"]),
        run_share=target.pool_share,
    )


def _offline(setting: Setting, target: Target, seed: int, out: Path) -> ArmResult:
    from dataflex.offline.config import OfflineSelectConfig
    from dataflex.offline.select import run_offline_select

    components = _components(setting)
    warm = out.parent / f"{out.name}_warmup"
    _, warm_wall = _train(
        [
            *_common(setting, setting.base_model, warm, seed),
            f"dataset={setting.pool}",
            f"max_steps={setting.warmup_step}",
            f"save_steps={setting.warmup_step}",
        ]
    )
    t0 = time.perf_counter()
    chosen = out.parent / f"{out.name}_selected"
    select = run_offline_select(
        OfflineSelectConfig(
            model_name_or_path=str(setting.base_model),
            checkpoints=[str(warm / f"checkpoint-{setting.warmup_step}")],
            dataset=setting.pool,
            eval_dataset=target.valid,
            dataset_dir=str(setting.data_dir),
            template=setting.template,
            cutoff_len=setting.cutoff_len,
            components_cfg_file=str(components),
            component_name="less",
            select_count=setting.round_budget,
            output_dir=str(chosen),
            device="cpu",
            seed=seed,
        )
    )
    select_s = time.perf_counter() - t0
    counts = select.report["composition"]
    if setting.family_key == "subtask":
        counts = _subtask_counts(setting, select.indices)
    subset = next(iter(select.report["dataset_info"]))
    shutil.copy2(
        chosen / select.report["dataset_info"][subset]["file_name"], setting.data_dir / f"{out.name}.json"
    )
    info_path = setting.data_dir / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info[out.name] = {**select.report["dataset_info"][subset], "file_name": f"{out.name}.json"}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    result, wall = _train(
        [
            *_common(setting, setting.base_model, out, seed),
            f"dataset={out.name}",
            f"max_steps={setting.total_steps}",
        ]
    )
    return ArmResult(
        arm="less_offline",
        seed=seed,
        precision=[_share(counts, target.name)],
        valid_loss=target_loss(setting, out, target.valid),
        test_loss=target_loss(setting, out, target.test),
        wall_s=warm_wall + select_s + wall,
        train_s=float(result.metrics["train_runtime"]),
        features_s=float(select.report.get("features_s", 0.0)),
        scoring_s=float(select.report.get("scoring_s", 0.0)),
        selection_other_s=select_s
        - float(select.report.get("features_s", 0.0))
        - float(select.report.get("scoring_s", 0.0)),
        warmup_s=warm_wall,
        run_share=_share(counts, target.name),
    )


def _subtask_counts(setting: Setting, indices: list[int]) -> dict[str, int]:
    from collections import Counter

    from dataflex.data import load_dataset_examples

    rows = load_dataset_examples(setting.pool, setting.data_dir)
    return dict(Counter(str(rows[i].get("subtask")) for i in indices))


def run_arm(setting: Setting, target: Target, arm: str, seed: int) -> ArmResult:
    """Train ``arm`` with ``seed`` on ``setting`` for ``target`` and measure it.

    The run's folders (the benchmark's own, under ``<work>/runs``) start empty: a
    rerun would otherwise find the last run's feature cache and report no feature time.
    """
    out = setting.work / "runs" / f"{target.name}-{arm}-s{seed}"
    for stale in (out, out.parent / f"{out.name}_warmup", out.parent / f"{out.name}_selected"):
        if stale.exists():
            shutil.rmtree(stale)
    if arm == "full":
        return _full(setting, target, seed, out)
    if arm == "less_offline":
        return _offline(setting, target, seed, out)
    variant = VARIANTS.get(arm)
    if variant is None:
        return _dynamic(setting, target, arm, seed, out)
    if variant.warmup_step is not None:  # same total steps: fewer rounds after a longer warm-up
        rounds, rest = divmod(setting.total_steps - variant.warmup_step, setting.update_step)
        if rest or rounds < 1:
            raise ValueError(f"{arm}: warm-up {variant.warmup_step} does not fit {setting.total_steps} steps")
        setting = replace(setting, warmup_step=variant.warmup_step, update_times=rounds)
    return _dynamic(setting, target, arm, seed, out, eval_dataset=variant.eval_dataset)

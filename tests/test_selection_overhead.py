"""The phase accounting of benchmarks/selection_overhead.py (never its timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from benchmarks.selection_overhead import main, phase_split, round_totals, run, summarize_point

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def _records(times, features, scoring, candidates, cache_hit=False):
    """A selections.jsonl in the dynamic trainer's shape: round 0 (random draw), then LESS rounds."""
    recs = [{"round": 0, "step": 0, "time": times[0], "metadata": {"selector": "random"}}]
    for r, (t, f, s, c) in enumerate(zip(times[1:], features, scoring, candidates), start=1):
        meta = {"candidates": c, "time_features_s": f, "time_scoring_s": s, "cache_hit": cache_hit}
        recs.append({"round": r, "step": 4 * r, "time": t, "candidates": 1000, "metadata": meta})
    return recs


def test_phase_split_by_hand():
    records = _records([0.5, 10.0, 12.0], features=[8.0, 9.5], scoring=[0.25, 0.5], candidates=[64, 64])
    split = phase_split(40.0, records)
    assert split == {
        "training": 40.0 - 22.5,
        "less_features": 17.5,
        "scoring": 0.75,
        "other_selection": 22.5 - 17.5 - 0.75,
    }
    assert math.isclose(sum(split.values()), 40.0)


def test_round_totals_counts_candidates_of_scored_rounds_only():
    records = _records([0.5, 10.0, 12.0], features=[8.0, 9.5], scoring=[0.25, 0.5], candidates=[64, 48])
    totals = round_totals(records)
    assert totals["scored_rounds"] == 2
    assert totals["candidates_scored"] == 112  # the metadata's count, not the pool size (1000)
    assert totals["rounds_s"] == 22.5


def test_summary_per_candidate_multiple():
    records = _records([0.5, 10.0, 12.0], features=[8.0, 9.5], scoring=[0.25, 0.5], candidates=[64, 64])
    # plain: 20 s for 96 examples; dynamic: 40 s; target set of 16 examples
    s = summarize_point(20.0, 96, 40.0, records, val_examples=16)
    assert s["ratio"] == 2.0
    assert s["training_ratio"] == (40.0 - 22.5) / 20.0
    assert s["feature_rows"] == 128 + 2 * 16
    assert s["per_feature_row_s"] == 17.5 / 160
    assert s["per_candidate_s"] == 22.0 / 128  # rounds >= 1 only: the warm-up draw is not scoring
    assert math.isclose(s["per_candidate_x_train_example"], (22.0 / 128) / (20.0 / 96))
    # against the dynamic run's own training phase (17.5 s for the same 96 examples)
    assert s["self_ratio"] == 40.0 / 17.5
    assert math.isclose(s["per_candidate_x_own_train_example"], (22.0 / 128) / (17.5 / 96))
    assert math.isclose(s["per_feature_row_x_own_train_example"], (17.5 / 160) / (17.5 / 96))


def test_refuses_cached_rounds_and_foreign_reports():
    cached = _records([0.5, 0.1], features=[0.0], scoring=[0.0], candidates=[64], cache_hit=True)
    with pytest.raises(ValueError, match="cached scores"):
        phase_split(40.0, cached)
    with pytest.raises(ValueError, match="not from the same run"):
        phase_split(5.0, _records([0.5, 10.0], features=[8.0], scoring=[0.2], candidates=[64]))


@pytest.mark.slow
def test_tiny_benchmark_run_reports_its_own_rounds_within_its_runtime(shared_data, tmp_path):
    result = main(
        ["--points", "64:4", "--hidden", "64", "--layers", "1", "--cutoff", "32", "--batch", "2",
         "--steps", "1", "--rounds", "2", "--val", "2", "--threads", "1", "--workdir", str(tmp_path)]
    )  # fmt: skip
    (point,) = result["points"]
    split = point["summary"]["phases_s"]
    # the phases come from this run's rounds, which ran inside the time measured around it
    assert split["less_features"] == sum(r["metadata"]["time_features_s"] for r in point["rounds"][1:])
    assert sum(r["time"] for r in point["rounds"]) <= point["train_runtime_s"] <= point["run_train_wall_s"]
    assert split["less_features"] > 0 and split["training"] > 0
    assert point["global_step"] == 3 and [r["round"] for r in point["rounds"]] == [0, 1, 2]
    assert point["summary"]["candidates_per_round"] == 4
    assert [r["global_step"] for r in result["plain"]["runs"]] == [3, 3]
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result))
    again = main(["--from-json", str(saved)])  # recomputes the summaries from the saved rounds
    assert again["points"][0]["summary"] == point["summary"]


def test_a_real_runs_phases_nest_inside_the_times_measured_around_them(tmp_path, monkeypatch):
    """Each phase the report splits is measured by its own clock; a phase counted twice, or a
    clock that spans more than its phase, breaks one of these relations (no timing bounds)."""
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((QUICKSTART / "less.yaml").read_text())
    components = {"selectors": {"less": {"name": "less", "params": {"proj_dim": 32, "seed": 1}}}}
    (tmp_path / "components.yaml").write_text(yaml.safe_dump(components))
    cfg.update(
        model_name_or_path=str(QUICKSTART / "model"),
        dataset_dir=str(QUICKSTART / "data"),
        output_dir=str(tmp_path / "out"),
        components_cfg_file=str(tmp_path / "components.yaml"),
        max_samples=24,
        cutoff_len=48,
        per_device_train_batch_size=4,
        eval_strategy="no",
        plot_loss=False,
        warmup_step=1,
        update_step=1,
        update_times=2,
    )
    (tmp_path / "less.yaml").write_text(yaml.safe_dump(cfg))
    result = run(tmp_path / "less.yaml")

    on_disk = [json.loads(line) for line in (tmp_path / "out" / "dataflex" / "selections.jsonl").open()]
    assert [r["round"] for r in result["records"]] == [r["round"] for r in on_disk] == [0, 1, 2]
    rounds_s = sum(r["time"] for r in on_disk)
    assert rounds_s <= result["train_runtime_s"] <= result["run_train_wall_s"]
    for r in on_disk[1:]:
        meta = r["metadata"]
        assert not meta["cache_hit"]
        # features and scoring are timed inside the selector, within the trainer's timing of
        # the round; the feature pass's own phases (forward, backward, ...) within features
        assert meta["time_features_s"] > 0 and meta["time_features_s"] + meta["time_scoring_s"] <= r["time"]
        phases = meta["feature_phases"]
        assert {"forward", "backward", "projection"} <= set(phases)
        assert sum(phases.values()) <= meta["time_features_s"] + 1e-3  # phases are rounded to 0.1 ms
    split = phase_split(result["train_runtime_s"], result["records"])
    assert split["less_features"] == sum(r["metadata"]["time_features_s"] for r in on_disk[1:])
    assert split["scoring"] == sum(r["metadata"]["time_scoring_s"] for r in on_disk[1:])
    assert split["training"] == result["train_runtime_s"] - rounds_s

"""selections.jsonl, the log line per round, and the plots."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter

import pytest
from dyn_helpers import IndexCollator, make_pool, tiny_llama, training_args

from dataflex.registry import build_selector
from dataflex.train.dynamic import DynamicSelectTrainer, SelectionSchedule, plot_run, read_selections

POOL = 18
SCHEDULE = SelectionSchedule(warmup_step=1, update_step=2, update_times=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    trainer = DynamicSelectTrainer(
        model=tiny_llama(),
        args=training_args(out),
        train_dataset=make_pool(POOL),
        data_collator=IndexCollator(),
        selector=build_selector("test_cumloss"),
        schedule=SCHEDULE,
    )
    logger = logging.getLogger("dataflex.train.dynamic.trainer")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        trainer.train()
    finally:
        logger.removeHandler(handler)
    return trainer, out / "dataflex", [r.getMessage() for r in records]


def test_one_record_per_round_with_composition(run):
    trainer, report_dir, _ = run
    records = read_selections(report_dir / "selections.jsonl")
    pool = make_pool(POOL)
    assert [r["round"] for r in records] == [0, 1, 2]
    assert [r["step"] for r in records] == [0, 1, 3]
    for rec in records:
        assert rec["candidates"] == POOL
        assert rec["chosen"] == len(rec["indices"]) == (2 if rec["round"] == 0 else 4)
        assert rec["composition"] == dict(sorted(Counter(pool[i]["dataset"] for i in rec["indices"]).items()))
        assert rec["indices"] == trainer.selections[rec["round"]].indices
        assert rec["time"] > 0 if rec["round"] else rec["time"] >= 0
        assert rec["subtasks"] is None  # the pool's examples carry no subtask
    # every round's time is inside the run's (seconds, measured per round, not cumulative)
    assert sum(r["time"] for r in records) <= trainer.state.log_history[-1]["train_runtime"]
    assert records[0]["lr"] is None and records[0]["metadata"]["selector"] == "warmup"
    assert records[1]["lr"] == pytest.approx(1e-2)  # the one warm-up step, linear decay from 1e-2
    assert records[1]["scores"] == trainer.selections[1].scores and "mean_loss" in records[1]["metadata"]


def test_a_log_line_per_round(run):
    *_, messages = run
    rounds = [m for m in messages if m.startswith("dataflex: round")]
    assert len(rounds) == 3
    assert rounds[1].startswith("dataflex: round 1 at step 1: chose 4 of 18 candidates in ")


def test_plots_are_written(run):
    _, report_dir, _ = run
    for name in ("loss.png", "composition.png", "scores.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((report_dir / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == list(range(1, SCHEDULE.total_steps + 1))
    assert plot_run(report_dir) == [report_dir / n for n in ("loss.png", "composition.png", "scores.png")]


def test_missing_matplotlib_is_a_clear_message(run, monkeypatch, caplog):
    trainer, report_dir, _ = run
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'dataflex\[plots\]'"):
        plot_run(report_dir)
    with caplog.at_level(logging.WARNING, logger="dataflex.train.dynamic.trainer"):
        trainer._write_report()
    assert "needs matplotlib" in caplog.text and "has no plots" in caplog.text

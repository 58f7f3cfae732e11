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


def test_phase_summary_of_the_round_log_line():
    from dataflex.train.dynamic.trainer import phase_summary

    meta = {"time_features_s": 1.234, "time_scoring_s": 0.05, "time_io_s": 0.3, "selector": "less"}
    assert phase_summary(meta) == "; features 1.23s, scoring 0.05s, I/O 0.30s"
    assert phase_summary({"selector": "random"}) == ""
    assert phase_summary(None) == ""


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


def _write_report(report_dir, records, targets):
    from dataflex.train.dynamic.reports import write_targets

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "selections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_targets(report_dir, targets)


def _record(round_, subtasks, composition=None, step=None, metadata=None):
    return {
        "round": round_,
        "step": step if step is not None else 5 * round_,
        "chosen": sum(subtasks.values()) if subtasks else sum(composition.values()),
        "subtasks": subtasks,
        "composition": composition or {"pool": sum(subtasks.values())},
        "scores": None,
        "metadata": metadata or {},
    }


def test_run_summary_is_three_lines_with_the_target_share_and_loss(tmp_path):
    from dataflex.train.dynamic.reports import run_summary, target_labels

    targets = target_labels([{"subtask": "upper", "dataset": "v"}, {"subtask": "upper", "dataset": "v"}])
    assert targets == ("subtask", ["upper"])
    _write_report(tmp_path, [_record(0, {"upper": 1, "other": 3}), _record(1, {"upper": 4})], targets)
    history = [{"step": 5, "eval_loss": 3.5}, {"step": 10, "loss": 2.0}, {"step": 10, "eval_loss": 3.25}]
    lines = run_summary(
        tmp_path,
        history,
        headline="trained 10 steps",
        pool_counts={"subtask": {"upper": 10, "other": 30}},
        eval_name="v",
    )
    assert lines == [
        f"trained 10 steps; report in {tmp_path}/ (selections.jsonl)",
        "target (upper, 25% of the pool) chosen per round: warm-up 1/4, round 1 4/4",
        "final target loss (eval_loss on v): 3.2500 at step 10 (step 5: 3.5000)",
    ]


def test_score_histogram_marks_the_chosen_in_their_bins():
    import torch

    from dataflex.selectors.scoring import score_histogram

    values = torch.arange(100, dtype=torch.float32)
    hist = score_histogram(values, chosen=[97, 98, 99], bins=10)
    assert len(hist["edges"]) == 11 and sum(hist["all"]) == 100
    assert hist["chosen"] == [0] * 9 + [3]


def _captured_figures(monkeypatch):
    from dataflex.train.dynamic import reports

    figures = {}

    def keep(fig, path, plt):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(reports, "_save", keep)
    return figures


def test_composition_highlights_the_target_and_says_when_there_is_one_dataset(tmp_path, monkeypatch):
    figures = _captured_figures(monkeypatch)
    _write_report(
        tmp_path / "a", [_record(0, {"upper": 1, "b": 3}), _record(1, {"upper": 4})], ("subtask", ["upper"])
    )
    plot_run(tmp_path / "a", [])
    ax = figures["composition.png"].axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["upper (target)", "b"]
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # outside the bars
    assert {t.get_text() for t in ax.texts} == {"1/4", "4/4"}

    one = [_record(0, None, composition={"only": 4}), _record(1, None, composition={"only": 4})]
    _write_report(tmp_path / "b", one, ("dataset", ["valid"]))
    plot_run(tmp_path / "b", [])
    ax = figures["composition.png"].axes[0]
    assert ax.get_legend() is None and not ax.patches  # no identical bars
    assert "every chosen example comes from one dataset, 'only'" in ax.texts[0].get_text()


def test_loss_plot_has_the_target_loss_and_the_selection_steps(tmp_path, monkeypatch):
    figures = _captured_figures(monkeypatch)
    _write_report(
        tmp_path, [_record(0, {"upper": 4}), _record(1, {"upper": 4}, step=5)], ("subtask", ["upper"])
    )
    history = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 9)] + [{"step": 8, "eval_loss": 2.5}]
    plot_run(tmp_path, history)
    ax = figures["loss.png"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "training loss (on each round's selection)",
        "target loss (upper): eval_loss",
        "selection round",
    ]
    assert ax.get_ylabel() == "loss (mean token cross-entropy)"


def test_scores_plot_shows_every_candidate_and_labels_the_score(tmp_path, monkeypatch):
    from dataflex.selectors.scoring import score_histogram

    figures = _captured_figures(monkeypatch)
    meta = {"score_histogram": score_histogram(list(range(20)), [18, 19], bins=5), "score_label": "my score"}
    _write_report(tmp_path, [_record(0, {"u": 2}), _record(1, {"u": 2}, metadata=meta)], ("subtask", ["u"]))
    plot_run(tmp_path, [])
    ax = figures["scores.png"].axes[0]
    assert ax.get_xlabel() == "my score" and ax.get_ylabel() == "candidates"
    assert ax.get_title() == "round 1 (step 5): 2 of 20"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all candidates", "chosen"]

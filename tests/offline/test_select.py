"""``dataflex-cli select`` end to end on the quickstart assets, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dataflex.cli import main
from dataflex.data import load_dataset_examples
from dataflex.errors import ConfigError
from dataflex.offline.config import load_offline_config
from dataflex.offline.select import run_offline_select
from dataflex.registry import SELECTORS, register_selector
from dataflex.selectors.base import CandidateScores, ScoresCandidates, Selector
from tests.selectors.less_reference import less_round_scores

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"


def train_checkpoints(out: Path, finetuning_type: str) -> Path:
    """HF Trainer checkpoints 1 and 2 (weights + optimizer.pt) of a 2-step quickstart run."""
    if not (QUICKSTART / "model" / "config.json").is_file():
        pytest.skip("examples/quickstart is missing")
    code = main(
        [
            "train",
            str(QUICKSTART / "sft.yaml"),
            f"finetuning_type={finetuning_type}",
            f"model_name_or_path={QUICKSTART / 'model'}",
            f"dataset_dir={QUICKSTART / 'data'}",
            f"output_dir={out}",
            "max_steps=2",
            "save_steps=1",
            "max_samples=24",
            "per_device_train_batch_size=4",
            "eval_dataset=null",
            'eval_strategy="no"',
            "plot_loss=false",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def warmup(tmp_path_factory):
    """LoRA checkpoints (adapter + optimizer.pt), the paper's setting."""
    return train_checkpoints(tmp_path_factory.mktemp("warmup"), "lora")


def write_configs(tmp: Path, warmup: Path, **over) -> Path:
    """The shipped examples/quickstart/select_less.yaml, pointed at ``warmup`` and made small."""
    components = {
        "selectors": {
            "less": {
                "name": "less",
                "params": {
                    "cache_dir": str(tmp / "cache"),
                    "gradient_type": "adam",
                    "proj_dim": 256,
                    "seed": 123,
                    "projector": "rademacher",
                    "subtask_field": "subtask",
                    "batch_size": 8,
                },
            },
            "loss": {"name": "loss", "params": {"focus": "high"}},
        }
    }
    if not (tmp / "components.yaml").exists():
        (tmp / "components.yaml").write_text(yaml.safe_dump(components))
    cfg = yaml.safe_load((QUICKSTART / "select_less.yaml").read_text())
    cfg.update(
        {
            "model_name_or_path": str(QUICKSTART / "model"),
            "checkpoints": [str(warmup / "checkpoint-1"), str(warmup / "checkpoint-2")],
            "dataset_dir": str(QUICKSTART / "data"),
            "max_samples": 16,
            "components_cfg_file": str(tmp / "components.yaml"),
            "select_fraction": 0.25,
            "output_dir": str(tmp / "out"),
            "device": "cpu",
        }
    )
    cfg.update(over)
    path = tmp / f"select-{len(list(tmp.glob('select-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_select_end_to_end_with_two_checkpoints(warmup, tmp_path, capsys):
    cfg = write_configs(tmp_path, warmup)
    assert main(["select", str(cfg)]) == 0
    assert "selected 4 of 16 examples" in capsys.readouterr().out
    out = tmp_path / "out"
    rows = read_jsonl(out / "scores.jsonl")
    assert [r["index"] for r in rows] == list(range(16))
    for r in rows:
        assert r["dataset"] == "quickstart_train"
        assert r["score"] == pytest.approx(max(r["subtask_scores"].values()), abs=1e-12)
        assert list(r["subtask_scores"]) == ["uppercase"]
    report = json.loads((out / "selection.json").read_text())
    assert report["checkpoint_weights"] == pytest.approx([2 / 3, 1 / 3])
    top = sorted(range(16), key=lambda i: (-rows[i]["score"], i))[:4]
    assert report["indices"] == top

    # the subset is the pool's own rows, in score order, with a loadable dataset_info.json entry
    source = json.loads((QUICKSTART / "data" / "train.json").read_text())
    subset = json.loads((out / "quickstart_train_selected.json").read_text())
    assert subset == [source[i] for i in top]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["quickstart_train_selected"]["columns"]["subtask"] == "task"
    assert len(load_dataset_examples("quickstart_train_selected", out)) == 4

    # several checkpoints combine as sum_i w_i * per-subtask score_i (w normalised), then max
    singles = []
    for ckpt in ("checkpoint-1", "checkpoint-2"):
        one = write_configs(
            tmp_path,
            warmup,
            checkpoints=[str(warmup / ckpt)],
            checkpoint_learning_rates=None,
            output_dir=str(tmp_path / ckpt),
        )
        result = run_offline_select(load_offline_config(one))
        assert result.report["checkpoint_weights"] == [1.0]
        singles.append(read_jsonl(tmp_path / ckpt / "scores.jsonl"))
    for i, r in enumerate(rows):
        expect = 2 / 3 * singles[0][i]["score"] + 1 / 3 * singles[1][i]["score"]
        assert r["score"] == pytest.approx(expect, abs=1e-9)
    assert singles[0] != singles[1]


def test_select_with_the_loss_selector(warmup, tmp_path):
    cfg = write_configs(tmp_path, warmup, component_name="loss", select_count=5, select_fraction=None)
    result = run_offline_select(load_offline_config(cfg))
    rows = read_jsonl(tmp_path / "out" / "scores.jsonl")
    assert [r["index"] for r in rows] == result.indices
    # independently: each pool example's own loss under the last checkpoint, one at a time
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataflex.data import SFTDataCollator

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(QUICKSTART / "model"), warmup / "checkpoint-2"
    ).eval()
    with torch.no_grad():
        losses = [float(model(**SFTDataCollator(0)([ex])).loss) for ex in result_pool(cfg)]
    top = sorted(range(len(losses)), key=lambda i: -losses[i])[:5]
    assert result.indices == top  # focus: high, temperature 0: the five highest losses
    assert [r["score"] for r in rows] == pytest.approx([losses[i] for i in top], abs=1e-5)


def test_bad_input_is_refused_before_any_work(warmup, tmp_path):
    def err(match, **over):
        with pytest.raises(ConfigError, match=match):
            run_offline_select(load_offline_config(write_configs(tmp_path, warmup, **over)))

    err("eval_dataset is not set", eval_dataset=None)
    err("no checkpoints are given", checkpoints=[], checkpoint_learning_rates=None)
    err(r"checkpoint_learning_rates has 1 entries but checkpoints has 2", checkpoint_learning_rates=[1e-3])
    err("set exactly one of select_fraction", select_count=3)
    err("select_count is 17 but the pool has 16", select_count=17, select_fraction=None)
    err("unknown key 'chekpoints'. Did you mean 'checkpoints'", chekpoints=[])
    no_opt = tmp_path / "no-optimizer"
    no_opt.mkdir()
    (no_opt / "adapter_config.json").write_text("{}")
    err("has no optimizer.pt", checkpoints=[str(no_opt)], checkpoint_learning_rates=None)
    components = yaml.safe_load((tmp_path / "components.yaml").read_text())
    components["selectors"]["less"]["params"]["gradient_type"] = "adamw"
    (tmp_path / "components.yaml").write_text(yaml.safe_dump(components))
    with pytest.raises(ConfigError, match="gradient_type: Input should be 'adam', 'sgd' or 'sign'"):
        run_offline_select(load_offline_config(write_configs(tmp_path, warmup)))


def test_bad_projector_name_and_overrides(tmp_path, warmup):
    cfg = write_configs(tmp_path, warmup)
    components = yaml.safe_load((tmp_path / "components.yaml").read_text())
    components["selectors"]["less"]["params"]["projector"] = "rademaker"
    (tmp_path / "components.yaml").write_text(yaml.safe_dump(components))
    with pytest.raises(ConfigError, match="unknown projector 'rademaker'. Did you mean 'rademacher'"):
        run_offline_select(load_offline_config(cfg))
    with pytest.raises(ConfigError, match="unknown key 'select_fractoin'"):
        load_offline_config(cfg, ["select_fractoin=0.1"])
    assert load_offline_config(cfg, ["select_fraction=0.5"]).select_fraction == 0.5
    assert main(["select", str(cfg), "select_count=oops"]) == 1


def test_missing_model_path_is_refused(tmp_path, warmup):
    cfg = write_configs(tmp_path, warmup, model_name_or_path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="model_name_or_path: the model path .* does not exist"):
        run_offline_select(load_offline_config(cfg))


def test_select_from_full_finetuning_checkpoints_equals_a_slow_less(tmp_path):
    """Full FT, identity projection: every score is LESS computed by hand from the checkpoint."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    full = train_checkpoints(tmp_path / "full", "full")
    ckpt = full / "checkpoint-2"
    assert not (ckpt / "adapter_config.json").exists()
    cfg = write_configs(tmp_path, full, checkpoints=[str(ckpt)], checkpoint_learning_rates=None)
    components = yaml.safe_load((tmp_path / "components.yaml").read_text())
    components["selectors"]["less"]["params"]["projector"] = "identity"
    (tmp_path / "components.yaml").write_text(yaml.safe_dump(components))
    result = run_offline_select(load_offline_config(cfg))
    rows = read_jsonl(tmp_path / "out" / "scores.jsonl")

    # The reference reads the Adam moments through the Trainer's own optimizer, loaded from
    # optimizer.pt, so a wrong index → parameter mapping in dataflex shows as wrong scores.
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    args = TrainingArguments(output_dir=str(tmp_path / "ref"), report_to=[], use_cpu=True)
    optimizer = Trainer(model=model, args=args).create_optimizer()
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    config = load_offline_config(cfg)
    val = result_pool(cfg, config.eval_dataset)
    expected, _ = less_round_scores(model, optimizer, result_pool(cfg), val, [ex["subtask"] for ex in val])
    assert [r["score"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-5)
    assert float(expected.std()) > 1e-2  # the scores tell the examples apart
    assert result.indices == sorted(range(16), key=lambda i: -float(expected[i]))[:4]


class LengthScorer(Selector):
    """A user's scoring selector: it has the ScoresCandidates capability, and select() is unused."""

    needs_optimizer_state = False

    def score_candidates(self, ctx, candidates):
        lengths = [float(len(ctx.train_dataset[int(i)]["input_ids"])) for i in candidates]
        return CandidateScores(torch.tensor(lengths, dtype=torch.float64)[:, None], ["all"])

    def select(self, ctx, num_samples):
        raise AssertionError("offline selection must use score_candidates")


@pytest.fixture
def length_scorer():
    """Registered only while the test runs, so other tests see the built-in selectors alone."""
    register_selector("test_offline_length_scorer")(LengthScorer)
    yield
    SELECTORS.unregister("test_offline_length_scorer")


def test_a_users_scoring_selector_runs_over_every_checkpoint(warmup, tmp_path, length_scorer):
    assert isinstance(LengthScorer(), ScoresCandidates)
    components = {"selectors": {"by_length": {"name": "test_offline_length_scorer", "params": {}}}}
    (tmp_path / "components.yaml").write_text(yaml.safe_dump(components))
    cfg = write_configs(tmp_path, warmup, component_name="by_length", select_count=3, select_fraction=None)
    result = run_offline_select(load_offline_config(cfg))
    lengths = [len(r["input_ids"]) for r in result_pool(cfg)]
    rows = read_jsonl(tmp_path / "out" / "scores.jsonl")
    # the weights (2/3, 1/3) sum to one, so the combined score is the length itself
    assert [r["score"] for r in rows] == pytest.approx([float(n) for n in lengths], abs=1e-12)
    assert result.indices == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))[:3]


def result_pool(cfg: Path, dataset: str | None = None) -> list[dict]:
    """The pool (or ``dataset``) as training tokenises it (the offline pool must be exactly this)."""
    from dataflex.data import get_template, tokenize_examples
    from dataflex.train.model import load_tokenizer

    config = load_offline_config(cfg)
    tok = load_tokenizer(config.model_name_or_path)
    name = dataset or config.dataset
    rows = load_dataset_examples(name, config.dataset_dir, max_samples=config.max_samples)
    return tokenize_examples(rows, tok, get_template(config.template, tok), config.cutoff_len)[0]


def test_pool_data_is_checked_as_in_training(warmup, tmp_path):
    bad = tmp_path / "pool.json"
    bad.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(ConfigError, match=r"no row has the columns \['instruction', 'output'\]"):
        run_offline_select(load_offline_config(write_configs(tmp_path, warmup, dataset=str(bad))))
    mixed = tmp_path / "mixed.json"
    rows = json.loads((QUICKSTART / "data" / "train.json").read_text())[:8]
    mixed.write_text(json.dumps([*rows, {"instruction": 3, "output": "a"}]))
    with pytest.raises(ConfigError, match=r"row 8: .*set strict: false"):
        run_offline_select(
            load_offline_config(write_configs(tmp_path, warmup, dataset=str(mixed), strict=True))
        )

"""A config's problems are all reported in one message, before any network or model work.

The seed guide's LESS config, run as a new user would from a folder that is not the original
repository, has five problems (its components file, DeepSpeed JSON, two datasets and the 8B
model are all elsewhere); each is listed with its key and fix, in one run, without a
connection attempt (a socket guard fails the test if one is made).
"""

from __future__ import annotations

import contextlib
import io
import socket
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from dataflex.cli import main
from dataflex.errors import ConfigError
from dataflex.train.config import load_train_config
from dataflex.train.preflight import ConfigProblems, check_run_inputs
from dataflex.train.runner import run_train
from tests.train.conftest import QUICKSTART, SEED_LESS_YAML


class NetworkGuard:
    """Records (and refuses) every name lookup and connection the process attempts, and every wait."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:  # a retry waits before it tries again
        self.sleeps.append(seconds)

    def getaddrinfo(self, host, *args, **kwargs):
        self.attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (no network in this test)")

    def connect(self, sock, address):
        self.attempts.append(f"connect {address}")
        raise OSError("no network in this test")


@pytest.fixture
def no_network(monkeypatch) -> NetworkGuard:
    guard = NetworkGuard()
    monkeypatch.setattr(socket, "getaddrinfo", guard.getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guard.connect)
    monkeypatch.setattr(time, "sleep", guard.sleep)
    return guard


def train_cli(config: Path, *overrides: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", str(config), *overrides])
    return code, err.getvalue()


@pytest.fixture
def origin_run(tmp_path, monkeypatch) -> Path:
    """The seed guide's less.yaml in a fresh folder (its ``../dataflex_saves`` lands in tmp_path)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it
    (work / "less.yaml").write_text(SEED_LESS_YAML)
    return work / "less.yaml"


def test_origin_config_reports_every_problem_in_one_message_without_network(origin_run, no_network):
    code, err = train_cli(origin_run)
    assert code == 1
    assert "Traceback" not in err
    assert "5 problems in the config, found before anything was loaded; fix them all" in err
    lines = [line.strip() for line in err.splitlines() if line.startswith("  - ")]
    assert [line.split(":", 1)[0] for line in lines] == [
        "- components_cfg_file",
        "- deepspeed",
        "- dataset",
        "- eval_dataset",
        "- model_name_or_path",
    ]
    assert "components file 'src/dataflex/configs/components.yaml' does not exist" in lines[0]
    assert "the DeepSpeed config 'examples/deepspeed/ds_z3_config.json' does not exist" in lines[1]
    assert "dataset 'alpaca_en_demo' not found" in lines[2] and "Set dataset_dir" in lines[2]
    assert "dataset 'alpaca_zh_demo' not found" in lines[3]
    assert "'meta-llama/Llama-3.1-8B' is not a local folder and not in the Hugging Face cache" in lines[4]
    assert "the hub was not asked" in lines[4] and "hf download meta-llama/Llama-3.1-8B" in lines[4]
    assert no_network.attempts == [] and no_network.sleeps == []
    assert "Retrying" not in err
    assert not (origin_run.parent.parent / "dataflex_saves").exists()  # output_dir was not created


def test_origin_config_problems_fixed_one_by_one_shrink_the_list(origin_run, no_network, tmp_path):
    shipped = load_train_config(None, ["model_name_or_path=m", "dataset=d", "output_dir=o"])
    fixes = [
        f"components_cfg_file={shipped.components_cfg_file}",
        "deepspeed=null",
        f"dataset_dir={QUICKSTART / 'data'}",
        "dataset=quickstart_train",
        "eval_dataset=quickstart_valid",
    ]
    cfg = load_train_config(origin_run, fixes)
    with pytest.raises(ConfigError) as info:
        check_run_inputs(cfg)
    assert not isinstance(info.value, ConfigProblems)  # one problem: its own message, no list
    assert str(info.value).startswith("model_name_or_path: 'meta-llama/Llama-3.1-8B' is not a local folder")
    cfg = load_train_config(origin_run, [*fixes, f"model_name_or_path={QUICKSTART / 'model'}"])
    check_run_inputs(cfg)  # nothing left to report
    assert no_network.attempts == []


def test_unreachable_hub_is_asked_once_without_retries(quickstart_overrides, no_network, monkeypatch):
    """Online but without network: one connection attempt, then the message (no 40 s of retries)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    cfg = load_train_config(
        QUICKSTART / "sft.yaml", [*quickstart_overrides, "model_name_or_path=nobody/no-such-model"]
    )
    with pytest.raises(ConfigError) as info:
        run_train(cfg)
    message = str(info.value)
    assert message.startswith(
        "model_name_or_path: 'nobody/no-such-model' is not a local folder and not in the Hugging Face cache, "
        "and the hub cannot be reached ("
    )
    assert "hf download nobody/no-such-model" in message
    assert no_network.sleeps == []  # no retry waited (transformers' download retries for ~40 s)
    # the model's config.json, and at most huggingface_hub's own once-per-process agent lookup
    assert 1 <= len(no_network.attempts) <= 2, no_network.attempts


def test_a_check_added_to_the_run_reports_with_the_others(quickstart_overrides):
    cfg = load_train_config(QUICKSTART / "sft.yaml", [*quickstart_overrides, "dataset=nope.json"])

    def my_check(config) -> None:
        raise ConfigError(f"output_dir: {config.output_dir!r} is refused by my_check.")

    with pytest.raises(ConfigProblems) as info:
        check_run_inputs(cfg, extra_checks=(my_check,))
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("dataset: dataset file 'nope.json' does not exist")
    assert info.value.problems[1].endswith("is refused by my_check.")
    assert str(info.value).splitlines()[1:] == [f"  - {p}" for p in info.value.problems]


def test_a_missing_adapter_is_refused_before_the_model_loads(quickstart_overrides, monkeypatch, tmp_path):
    import dataflex.train.runner as runner

    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    cfg = load_train_config(
        QUICKSTART / "sft.yaml",
        [*quickstart_overrides, "finetuning_type=lora", f"adapter_name_or_path={tmp_path / 'old-run'}"],
    )
    with pytest.raises(ConfigError, match=r"adapter_name_or_path: '.*old-run' does not exist; point it at"):
        run_train(cfg)
    (tmp_path / "old-run").mkdir()
    with pytest.raises(ConfigError, match=r"adapter_name_or_path: '.*old-run' has no adapter_config\.json"):
        run_train(cfg)
    assert not (tmp_path / "out").exists()

"""The train/export subcommands: exit codes and error printing."""

from __future__ import annotations

from dataflex.cli import main


def test_config_error_exits_1_with_the_message(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_name_or_path: m\ndataset: d\noutput_dir: o\nlearning_rte: 1\n")
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "dataflex-cli train: error:" in err
    assert "unknown key 'learning_rte'. Did you mean 'learning_rate'" in err
    assert main(["export", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err

import subprocess
import sys

import pytest

from dataflex import __version__
from dataflex.cli import main


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith(f"dataflex {__version__} (torch ")


def test_list_shows_selectors_with_doc_line(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "selectors:" in out and "projectors:" in out
    assert "random  Uniform random choice of examples" in out


def test_list_filters_by_kind_and_pattern(capsys):
    assert main(["list", "selectors", "--pattern", "r*"]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "projectors:" not in out
    assert "less" not in out and "loss" not in out  # the pattern excludes what it does not match


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["list", "--bogus"]])
def test_bad_usage_exits_2_with_usage_and_no_traceback(argv):
    proc = subprocess.run([sys.executable, "-m", "dataflex.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: dataflex-cli" in proc.stderr
    assert "Traceback" not in proc.stderr

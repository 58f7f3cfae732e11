import re
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
    # names are padded to the longest registered name
    assert re.search(r"^  random +Uniform random choice of examples", out, re.M)


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


def test_list_imports_plugins_first(tmp_path, monkeypatch, capsys):
    (tmp_path / "listed_plugin_mod.py").write_text(
        "from dataflex.selectors import Selection, Selector, register_selector\n\n\n"
        "@register_selector('listed_by_plugin')\n"
        "class ListedByPlugin(Selector):\n"
        '    """A selector that only a plugin module registers."""\n\n'
        "    def select(self, ctx, num_samples):\n"
        "        return Selection(indices=list(range(num_samples)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "listed_plugin_mod", raising=False)
    try:
        assert main(["list", "selectors", "--plugins", "listed_plugin_mod"]) == 0
    finally:  # registered only while this test runs: other tests see the built-in selectors alone
        from dataflex.registry import SELECTORS

        if "listed_by_plugin" in SELECTORS.names():
            SELECTORS.unregister("listed_by_plugin")
    out = capsys.readouterr().out
    assert "listed_by_plugin" in out and "A selector that only a plugin module registers." in out
    assert main(["list", "--plugins", "no_such_plugin_mod"]) == 1
    assert "--plugins: cannot import 'no_such_plugin_mod'" in capsys.readouterr().err


def test_list_templates_goes_through_the_registry(tmp_path, monkeypatch, capsys):
    from dataflex.registry import TEMPLATES

    (tmp_path / "listed_template_mod.py").write_text(
        "from dataflex.data import Template, register_template\n\n"
        "register_template(Template(name='listed_chat', user='{content}', assistant='{content}', "
        "description='A template that only a plugin module registers.'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "listed_template_mod", raising=False)
    try:
        assert main(["list", "templates", "--plugins", "listed_template_mod"]) == 0
    finally:
        if "listed_chat" in TEMPLATES:
            TEMPLATES.unregister("listed_chat")
    out = capsys.readouterr().out
    assert "selectors:" not in out and out.startswith("templates:\n")
    assert re.search(r"^  listed_chat +A template that only a plugin module registers\.$", out, re.M)
    assert re.search(r"^  tokenizer +the tokenizer's own chat template", out, re.M)
    assert re.search(r"^  llama3 +Llama 3 headers", out, re.M)
    assert main(["list", "templates", "--pattern", "l*"]) == 0
    out = capsys.readouterr().out
    assert "llama3" in out and "tokenizer" not in out and "chatml" not in out

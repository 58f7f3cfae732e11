"""The `dataflex` logger prints without user setup, obeys set_verbosity, and is rank-0-only."""

from __future__ import annotations

import logging

import pytest

from dataflex import logging_utils


@pytest.fixture
def log(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    before = logging_utils.get_verbosity()
    yield logging.getLogger("dataflex.some.module")
    logging_utils.set_verbosity(before)


def test_info_lines_reach_stderr_without_configuring_logging(log, capsys):
    log.info("dataflex: round %d at step %d", 1, 5)
    log.warning("careful")
    assert capsys.readouterr().err == "[dataflex] round 1 at step 5\n[dataflex] WARNING: careful\n"


def test_set_verbosity_warning_silences_the_round_lines(log, capsys):
    logging_utils.set_verbosity_warning()
    log.info("round 1")
    log.warning("still shown")
    assert capsys.readouterr().err == "[dataflex] WARNING: still shown\n"
    logging_utils.set_verbosity("info")
    log.info("back")
    assert capsys.readouterr().err == "[dataflex] back\n"
    with pytest.raises(ValueError, match="unknown verbosity 'loud'"):
        logging_utils.set_verbosity("loud")


def test_other_ranks_print_only_errors(log, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    log.info("round 1")
    log.warning("a warning")
    log.error("an error")
    assert capsys.readouterr().err == "[dataflex] ERROR: an error\n"


def test_no_double_lines_after_a_users_basicconfig(log, capsys):
    logging_utils.disable_propagation()  # the library default (the test suite turns it on for caplog)
    root = logging.getLogger()
    handler = logging.StreamHandler()  # what logging.basicConfig() would add, writing to stderr
    root.addHandler(handler)
    try:
        log.info("once")
    finally:
        root.removeHandler(handler)
        logging_utils.enable_propagation()
    assert capsys.readouterr().err.count("once") == 1

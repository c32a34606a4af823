"""progress.py: bars only on a terminal (TQDM_DISABLE and --quiet honoured), log lines otherwise."""

from __future__ import annotations

import io

import pytest

from globalmask import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore():
    yield
    progress.unconfigure()
    assert not [h for h in progress.LOG.handlers if isinstance(h, progress._TqdmHandler)]


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress.bars_enabled(True, _Tty())
    assert not progress.bars_enabled(True, io.StringIO())  # a file, a pipe
    assert not progress.bars_enabled(False, _Tty())


@pytest.mark.parametrize("value, shown", [("1", False), ("True", False), ("0", True), ("", True), ("false", True)])
def test_tqdm_disable_is_honoured(monkeypatch, value, shown):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress.bars_enabled(True, _Tty()) is shown


def test_quiet_hides_bars_and_info_lines_verbose_shows_debug(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    progress.configure(-1, prefix="globalmask x")
    assert not progress.bars_enabled(True, _Tty())
    progress.note("a line")
    progress.LOG.warning("a warning")
    assert capsys.readouterr().err == "globalmask x: a warning\n"
    progress.configure(0, prefix="globalmask x")
    progress.note("shown", bar=False)
    progress.note("under a bar", bar=True)  # the bar shows it: debug only
    assert capsys.readouterr().err == "globalmask x: shown\n"
    progress.configure(1, prefix="globalmask x")
    progress.note("under a bar", bar=True)
    assert capsys.readouterr().err == "globalmask x: under a bar\n"


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of progress.py asked for


def test_the_defaults_ask_for_a_bar_and_log_at_info(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress.bars_enabled(stream=_Tty())  # a caller that says nothing asks for a bar
    progress.configure(prefix="gm")  # the command line's default: INFO lines, bars on a terminal
    assert progress.bars_enabled(True, _Tty())
    progress.note("shown")
    progress.note("under a bar", bar=True)
    assert capsys.readouterr().err == "gm: shown\n"


def test_a_log_line_that_cannot_be_formatted_is_reported_and_the_command_goes_on(capsys):
    progress.configure(0, prefix="gm")
    progress.LOG.info("%d cases", "three")  # a bug in a message must never stop a command
    progress.note("next")
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "Message: '%d cases'" in err and "Arguments: ('three',)" in err
    assert err.endswith("gm: next\n")

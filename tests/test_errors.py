"""One error line and one set of library loggers for the CLI and the batch engine."""
from __future__ import annotations

import logging

import pytest

from davel.batch.records import captured_warnings
from davel.errors import LIBRARY_LOGGERS, InputError, one_line


def test_one_line_of_each_kind(monkeypatch, capsys):
    monkeypatch.delenv("DAVEL_DEBUG", raising=False)
    assert one_line(InputError("a.mp4: too short\nmore detail")) == "a.mp4: too short"
    assert one_line(InputError()) == "InputError"
    assert one_line(FileNotFoundError(2, "No such file or directory", "x.mp4")) == "x.mp4: No such file or directory"
    assert one_line(ValueError("bad\nworse")) == "unexpected ValueError: bad (set DAVEL_DEBUG=1 for details)"
    assert capsys.readouterr().err == ""


def test_debug_prints_the_traceback_with_its_cause(monkeypatch, capsys):
    monkeypatch.setenv("DAVEL_DEBUG", "1")
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise InputError("outer") from exc
    except InputError as exc:
        assert one_line(exc) == "outer"
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'inner'" in err and "InputError: outer" in err


@pytest.mark.parametrize("level", [logging.NOTSET, logging.ERROR, logging.INFO])
def test_captured_warnings_restores_the_logger_levels(level):
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    before = [(logger.level, list(logger.handlers)) for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(level)
        with captured_warnings() as warned:
            logging.getLogger("extractors.decode").warning("a damaged stream")
            logging.getLogger("davel").info("not a warning")
        assert warned == ["a damaged stream"]
        assert [logger.level for logger in loggers] == [level] * len(loggers)
    finally:
        for logger, (lvl, handlers) in zip(loggers, before):
            logger.setLevel(lvl)
            assert logger.handlers == handlers


def test_the_viewer_raises_the_one_output_error(tmp_path):
    import davel.errors
    import davel.viewer.errors
    from davel.viewer.files import check_writable
    from davel.viewer.timeline import output_paths

    assert not hasattr(davel.viewer.errors, "OutputError")
    with pytest.raises(davel.errors.OutputError, match="is a directory"):
        check_writable(tmp_path)
    two = [{"video": "a.mp4", "events": []}, {"video": "b.mp4", "events": []}]
    with pytest.raises(davel.errors.OutputError, match="give -o a folder"):
        output_paths(two, tmp_path / "one.png")

"""The command line explains itself: every argument of every command has a help text,
defaults show in it, and one concept has one flag name everywhere."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from app.cli import HelpFormatter, all_parsers, build_parser

pytestmark = pytest.mark.unit

def _arguments() -> list[tuple[str, argparse.Action]]:
    found = []
    for parser in all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction
                          | argparse._SubParsersAction):
                continue
            found.append((parser.prog, action))
    return found


def test_every_argument_has_help() -> None:
    missing = {(prog, a.dest) for prog, a in _arguments() if not a.help}
    assert not missing, sorted(missing)


def test_every_command_shows_defaults() -> None:
    parsers = all_parsers(build_parser())
    assert all(issubclass(p.formatter_class, HelpFormatter) for p in parsers)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["postmatch", "--help"])
    assert "records per poll (default: 500)" in " ".join(out.getvalue().split())
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["stack", "logs", "--help"])
    assert "(default: 50)" in out.getvalue()
    assert "(default: None)" not in out.getvalue()


def test_one_name_per_flag() -> None:
    visible = {s for _, a in _arguments() if a.help != argparse.SUPPRESS
               for s in a.option_strings}
    # "stop after this long without records": --idle-seconds everywhere (--idle-exit, the
    # embedding agent's old spelling, still parses but is not shown).
    assert "--idle-exit" not in visible
    assert {s for s in visible if "idle" in s} == {"--idle-seconds"}
    parser = build_parser()
    assert parser.parse_args(["agents", "embedding", "--idle-exit", "5"]).idle_seconds == 5
    assert parser.parse_args(["postmatch", "--idle-seconds", "5"]).idle_seconds == 5
    # "one pass over what is there now, then exit": --once (matcher, reconciler).
    assert parser.parse_args(["matcher", "run", "--once"]).once
    assert parser.parse_args(["reconciler", "--once"]).once

"""A cold ``stack up`` says what it is doing: long set-up steps are announced with an
estimate and report every HEARTBEAT_SECONDS that they are still running; ``up_all``
yields each service's line as soon as that service is up."""

from __future__ import annotations

import pytest

import stack.base
from stack.base import run
from stack.services import up_all

pytestmark = pytest.mark.unit


def test_long_step_is_announced_and_keeps_saying_it_runs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(stack.base, "HEARTBEAT_SECONDS", 0.2)
    run(["sleep", "0.9"], what="go build nakama", expect="first use only; several minutes")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "... go build nakama (first use only; several minutes)"
    assert sum(line.startswith("    still go build nakama: ") for line in lines) >= 2
    assert lines[-1].startswith("    go build nakama: done in ")


def test_short_step_stays_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    run(["true"], what="quick")
    assert capsys.readouterr().out == ""


class _Fake:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def up(self) -> str:
        self.seen.append(self.name)
        return f"{self.name}: started"


def test_up_all_reports_each_service_as_it_comes_up() -> None:
    seen: list[str] = []
    lines = up_all([_Fake("kafka", seen), _Fake("cassandra", seen)])  # type: ignore[list-item]
    assert next(lines) == "kafka: started" and seen == ["kafka"]  # before cassandra starts
    assert list(lines) == ["cassandra: started"]

"""``mosaic stack up`` twice in a row is safe and ``status`` reports every service."""

from __future__ import annotations

import pytest

from app.cli import main
from stack.services import OPTIONAL, SERVICES

DEFAULT = [name for name in SERVICES if name not in OPTIONAL]  # what a plain 'up' starts

pytestmark = pytest.mark.integration


@pytest.mark.stack_scripts
def test_up_twice_then_status_reports_every_service(
        kafka_stack: object, cassandra_stack: object, nakama_stack: object, s3_stack: object,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "up"]) == 0
    first = capsys.readouterr().out
    assert main(["stack", "up"]) == 0
    second = capsys.readouterr().out
    for name in DEFAULT:
        assert f"{name}: reused" in second, second
    assert first.count("reused") == len(DEFAULT)  # the fixtures had started them all

    assert main(["stack", "status"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(rows) == sorted(DEFAULT)
    for name, cols in rows.items():
        assert cols[2] == "ok", (name, cols)
        assert cols[1].isdigit(), (name, cols)  # started by us: the pid file names it


def test_unknown_service_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "status", "redis"]) == 1
    assert "unknown service(s) ['redis']" in capsys.readouterr().err

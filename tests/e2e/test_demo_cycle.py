"""The main job, end to end on the real stack: ``mosaic demo`` with a small pool must
pass every one of its own checks (seekers, rooms, single notifications, block honoured,
status RPC) — and the checks must be able to fail."""

from __future__ import annotations

import pytest

from app.demo_report import DemoReport
from app.demo_run import run_demo
from mosaic.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def report(kafka_stack: object, cassandra_stack: object, nakama_stack: object,
           s3_stack: object) -> DemoReport:
    return run_demo(Settings(), users=10, seed=11, timeout_seconds=300)


def test_demo_cycle_passes_all_checks(report: DemoReport) -> None:
    names = [name for name, _, _ in report.checks]
    assert len(names) == 7, names
    assert report.ok, report.render()
    # 10 users, one blocked pair inside a cluster: the matcher still pairs everyone.
    assert len(report.pairs) == report.expected_pairs == 5
    assert "RESULT: all checks passed" in report.render()


def test_report_fails_when_a_check_fails(report: DemoReport) -> None:
    broken = DemoReport(pool=report.pool, personas=report.personas, checks=list(report.checks))
    broken.check("a deliberately failing check", False, "detail")
    assert not broken.ok
    assert "[FAIL] a deliberately failing check" in broken.render()

"""The stack's real Prometheus (built from the Go module proxy on first use): the alert
rules pass ``promtool check rules`` and their unit tests (``promtool test rules``), a
broken expectation fails them, and a running Prometheus loads the rules and scrapes a
process listed in its file-discovered targets."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mosaic.ops.ports import targets_dir, write_targets
from mosaic.ops_http import OpsServer
from mosaic.settings import Settings
from stack.prometheus import RULES_FILE, Prometheus

# The first use on a machine builds Prometheus from source (~15-25 min on 2 cores), inside
# the first test's fixture: past the suite's 600 s default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

RULES_TEST = RULES_FILE.with_name("rules_test.yml")


@pytest.fixture(scope="module")
def prometheus(settings: Settings) -> Prometheus:
    service = Prometheus(settings)
    service.install()  # builds prometheus + promtool once (cached in the cache dir)
    return service


def _promtool(prometheus: Prometheus, *args: str, cwd: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(prometheus.promtool), *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=cwd)


def test_rules_pass_promtool_check(prometheus: Prometheus) -> None:
    result = _promtool(prometheus, "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_rules_unit_tests_pass(prometheus: Prometheus) -> None:
    result = _promtool(prometheus, "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails(prometheus: Prometheus, tmp_path: Path) -> None:
    shutil.copy(RULES_FILE, tmp_path / "rules.yml")
    text = RULES_TEST.read_text().replace("reason_type: SerializationError}",
                                          "reason_type: ValidationError}", 1)
    (tmp_path / "rules_test.yml").write_text(text)
    result = _promtool(prometheus, "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "MosaicDeadLetters" in result.stdout + result.stderr


def test_running_prometheus_loads_rules_and_scrapes_discovered_targets(
        prometheus: Prometheus, settings: Settings) -> None:
    prometheus.up()
    ops = OpsServer("127.0.0.1", 0, lambda: (True, {}))
    target = targets_dir(settings) / f"pytest-{os.getpid()}.json"
    write_targets(target, [{"targets": [f"127.0.0.1:{ops.port}"],
                            "labels": {"service": "pytest-probe"}}])
    api = f"http://127.0.0.1:{settings.stack.prometheus_port}/api/v1"
    try:
        rules = httpx.get(f"{api}/rules", timeout=5, trust_env=False).json()
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {"MosaicDeadLetters", "MosaicConsumerLagGrowing", "MosaicNoCycleCompleted",
                "MosaicMatcherFenced", "MosaicIngressPublishFailures"} <= names
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline:
            reply = httpx.get(f"{api}/query", params={
                "query": 'process_cpu_seconds_total{service="pytest-probe"}'},
                timeout=5, trust_env=False).json()
            if reply["data"]["result"]:
                value = reply["data"]["result"][0]["value"][1]
                break
            time.sleep(1)
        assert value is not None, "Prometheus never scraped the probe's /metrics"
    finally:
        target.unlink(missing_ok=True)
        ops.close()

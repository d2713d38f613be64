"""Logging set-up of every command: MOSAIC_LOG_LEVEL and MOSAIC_LOG_FORMAT=json really
work (through the CLI, in a fresh process), context fields travel via ``extra=``, secrets
never reach a line, third-party noise only shows when debugging."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from app.ops.supervisor import ServiceSpec, Supervisor
from mosaic.ops.logs import configure_logging, secret_values
from mosaic.settings import Settings

pytestmark = pytest.mark.unit

SCRIPT = """
import logging, sys
from app.cli import main
from mosaic.ops.logs import configure_from_settings
configure_from_settings()
log = logging.getLogger("mosaic.test")
log.debug("a debug line")
log.info("cycle done", extra={"cycle_id": "p:1", "pool": "p", "user_id": "u1"})
log.warning("dead-lettered", extra={"topic": "t", "partition": 2, "offset": 41})
logging.getLogger("librdkafka").warning("GETPID [thrd:main]: Failed to acquire PID")
logging.getLogger("aiokafka.consumer.group_coordinator").error(
    "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError")
log.error("calling http://nakama/v2/rpc/x?http_key=%s with %s", "abc123secret",
          "mosaic-local-ingress-hmac")
"""


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(**env: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stderr.splitlines()


def test_json_format_carries_context_fields_and_masks_secrets() -> None:
    lines = [json.loads(x) for x in _run(MOSAIC_LOG_FORMAT="json", MOSAIC_LOG_LEVEL="INFO")]
    by_message = {e["message"].split(" ")[0]: e for e in lines}
    cycle = by_message["cycle"]
    assert (cycle["cycle_id"], cycle["pool"], cycle["user_id"], cycle["level"]) == (
        "p:1", "p", "u1", "INFO")
    dead = by_message["dead-lettered"]
    assert (dead["topic"], dead["partition"], dead["offset"]) == ("t", 2, 41)
    assert "a debug line" not in json.dumps(lines)
    # No noise at INFO; no secret (a configured one, or a key in a URL) anywhere.
    text = "\n".join(json.dumps(e) for e in lines)
    assert "GETPID" not in text and "GroupCoordinatorNotAvailable" not in text
    assert "abc123secret" not in text and "mosaic-local-ingress-hmac" not in text
    assert "http_key=***" in by_message["calling"]["message"]


def test_level_from_environment_and_debug_keeps_the_noise() -> None:
    quiet = _run(MOSAIC_LOG_LEVEL="WARNING")
    assert not any("cycle done" in x for x in quiet)
    assert any("dead-lettered" in x and "topic=t partition=2 offset=41" in x for x in quiet)
    loud = "\n".join(_run(MOSAIC_LOG_LEVEL="DEBUG"))
    assert "a debug line" in loud and "GETPID" in loud
    assert "GroupCoordinatorNotAvailable" in loud
    assert "abc123secret" not in loud


def test_version_flag() -> None:
    version = subprocess.run([sys.executable, "-c", "from app.cli import entry; entry()",
                              "--version"], capture_output=True, text=True, timeout=60,
                             check=False)
    assert version.returncode == 0 and version.stdout.startswith("mosaic ")


def test_secret_values_walks_the_settings_tree() -> None:
    found = secret_values(Settings())
    assert Settings().nakama.http_key.get_secret_value() in found
    assert Settings().ingress.hmac_key.get_secret_value() in found
    assert all(isinstance(x, str) and len(x) >= 6 for x in found)
    assert not any(isinstance(x, SecretStr) for x in found)


def test_text_exceptions_and_json_tracebacks(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(fmt="json", secrets=["hunter22"], stream=out)
    try:
        raise RuntimeError("password=hunter22 rejected")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    entry = json.loads(out.getvalue())
    assert "RuntimeError" in entry["exc"] and "hunter22" not in entry["exc"]


def test_supervisor_json_mode_tags_every_line_with_its_service() -> None:
    out = io.StringIO()
    script = ("import json; print(json.dumps({'level': 'INFO', 'message': 'hi', "
              "'cycle_id': 'c1'})); print('plain text')")
    Supervisor([ServiceSpec("matcher", (script,), 0)], command=[sys.executable, "-c"],
               out=out, json_lines=True).run()
    entries = [json.loads(x) for x in out.getvalue().splitlines()]
    assert all(e["service"] in ("run", "matcher") for e in entries)
    assert {"level": "INFO", "message": "hi", "cycle_id": "c1", "service": "matcher"} in entries
    assert any(e["message"] == "plain text" and e["service"] == "matcher" for e in entries)

"""The population run's pure pieces: percentiles, who did not get exactly one
notification, realtime envelopes, the supervisor log's pids and the per-service sums."""

from __future__ import annotations

import io
import json
import os

import pytest

from app.population.report import (
    CpuWindow,
    Progress,
    child_pids,
    mean_request_seconds,
    not_exactly_once,
    notification_delays,
    peak_rss_mib,
    percentile,
    spread,
)
from app.population.users import SimUser, _claims, _match_notes

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    (list(map(float, range(1, 101))), 99, 99.0), (list(map(float, range(1, 101))), 100, 100.0)])
def test_nearest_rank_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_spread_rounds_to_ms() -> None:
    assert spread([0.1234, 0.5, 2.00049]) == {"p50": 0.5, "p99": 2.0, "max": 2.0}
    assert spread([]) == {"p50": None, "p99": None, "max": None}


def test_users_without_exactly_one_notification_of_the_cycle() -> None:
    once = SimUser("a", notes=[(10.0, "c1")])
    twice = SimUser("b", notes=[(10.5, "c1"), (11.0, "c1")])
    other = SimUser("c", notes=[(10.2, "c0")], socket_closed="closed: 1006")
    none = SimUser("d", error="RuntimeError: x")
    bad = not_exactly_once([once, twice, other, none], "c1")
    assert [(b["custom_id"], b["count"], b["other_cycles"]) for b in bad] == [
        ("b", 2, 0), ("c", 0, 1), ("d", 0, 0)]
    assert bad[1]["error"] == "closed: 1006" and bad[2]["error"] == "RuntimeError: x"
    assert notification_delays([once, twice, other], "c1", 9.0) == [1.0, 1.5]


def test_match_notifications_in_a_realtime_envelope() -> None:
    note = {"code": 101, "content": json.dumps({"cycle_id": "p:1", "partner_user_id": "u"})}
    envelope = {"notifications": {"notifications": [note, {"code": 5, "content": "{}"}]}}
    assert _match_notes(envelope) == ["p:1"]
    assert _match_notes({"cid": "1", "rpc": {}}) == []


def test_session_token_claims() -> None:
    import base64

    body = base64.urlsafe_b64encode(json.dumps({"uid": "u-1"}).encode()).rstrip(b"=")
    assert _claims(f"h.{body.decode()}.s")["uid"] == "u-1"


def test_child_pids_and_their_memory_and_cpu_by_service() -> None:
    log = ("run        | started ingress (pid 11): mosaic ingress serve\n"
           "postmatch  | started nothing\n"
           f"run        | started postmatch (pid {os.getpid()}): mosaic postmatch\n"
           f"run        | started postmatch-2 (pid {os.getpid()}): mosaic postmatch\n"
           "run        | started ingress (pid 12): mosaic ingress serve\n")
    pids = child_pids(log)
    assert pids == {"ingress": 12, "postmatch": os.getpid(), "postmatch-2": os.getpid()}
    rss = peak_rss_mib({"postmatch": os.getpid(), "postmatch-2": os.getpid(), "gone": 0})
    assert list(rss) == ["postmatch"] and rss["postmatch"] > 0  # replicas summed
    window = CpuWindow({"postmatch": os.getpid(), "postmatch-2": os.getpid(), "x": None})
    window.start()
    sum(i * i for i in range(300_000))
    shares = window.stop()
    assert set(shares) == {"postmatch", "x"} and shares["x"] is None


def test_progress_lines() -> None:
    out = io.StringIO()
    progress = Progress("sign-in", 3, every=3600, out=out)
    progress(1)
    progress(3)
    assert out.getvalue().startswith("sign-in 3/3 (")  # only the last: the first is too soon


def test_mean_ingress_request_seconds_per_route() -> None:
    text = ("# HELP mosaic_ingress_request_duration_seconds Request latency\n"
            "# TYPE mosaic_ingress_request_duration_seconds histogram\n"
            'mosaic_ingress_request_duration_seconds_bucket{le="+Inf",route="optin"} 4.0\n'
            'mosaic_ingress_request_duration_seconds_count{route="optin"} 4.0\n'
            'mosaic_ingress_request_duration_seconds_sum{route="optin"} 0.2\n'
            'mosaic_ingress_request_duration_seconds_count{route="status"} 0.0\n'
            'mosaic_ingress_request_duration_seconds_sum{route="status"} 0.0\n')
    assert mean_request_seconds(text) == {"optin": 0.05}

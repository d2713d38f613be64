"""The population run at 2,000 users (bench/population.py's code, app/population/run.py):
users sign in with ID tokens from the OIDC stand-in, keep Nakama sockets open, opt in
through ``rpc_opt_in_match``; ``mosaic run`` (ingress, embedding, matcher, post-match,
reconciler; own topics, pool, groups, transactional id) makes them seekers, one tick pairs
them, and every user's socket receives exactly one match notification for the cycle."""

from __future__ import annotations

import json

import pytest

from app.population.run import PopulationError, PopulationOptions, run_population
from mosaic.settings import Settings
from stack.base import Service

pytestmark = [pytest.mark.e2e, pytest.mark.population]

USERS = 2000


@pytest.mark.timeout(600)
def test_every_user_gets_exactly_one_notification_on_its_socket(
        settings: Settings, kafka_stack: Service, cassandra_stack: Service,
        nakama_stack: Service, s3_stack: Service) -> None:
    try:
        summary = run_population(settings, PopulationOptions(
            users=USERS, stall_seconds=60))
    except PopulationError as exc:  # names the stage, what is missing and the log's tail
        pytest.fail(str(exc))
    bad = summary["not_exactly_once"]
    assert not bad, f"{len(bad)} users without exactly one notification, e.g. {bad[:10]}"
    assert summary["users"] == summary["notified_exactly_once"] == USERS

    # The summary agrees with itself.
    assert json.loads(json.dumps(summary)) == summary
    notified = summary["tick_to_notification_s"]
    assert 0 < notified["p50"] <= notified["p99"] <= notified["max"]
    assert notified["max"] == summary["tick_to_last_notification_s"]
    assert 0 < summary["tick_to_cycle_completed_s"] < summary["tick_to_last_notification_s"]
    seeker = summary["optin_to_seeker_s"]
    assert 0 < seeker["p50"] <= seeker["p99"] <= seeker["max"]
    assert summary["sign_in_per_s"] > 0 and summary["opt_in_per_s"] > 0
    services = {"ingress", "embedding", "matcher", "postmatch", "reconciler"}
    assert services <= set(summary["peak_rss_mib"])
    assert all(summary["peak_rss_mib"][s] > 0 for s in services)
    assert set(summary["cpu_cores"]) == {"run", "sign_in", "opt_in", "cycle"}
    assert summary["cpu_cores"]["run"]["nakama"] > 0
    assert summary["cpu_cores"]["sign_in"]["postgres"] > 0  # accounts are created

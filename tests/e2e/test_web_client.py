"""The web client (web/, docs/web.md) end to end on the real stack, in a real browser
(Playwright driving Debian's chromium, tests/pages.py; the steps are in web_steps.py).

Four users with insights in S3 (two pairs of one interest cluster each) and a fifth sign in
through the OIDC issuer stand-in's form, each in a browser context of their own; the four
opt in with the button; the embedding agent makes them seekers; a tick, then, mid-cycle, one
user's socket is dropped (it reconnects before the notification) and another's is dropped
and kept from reconnecting until post-match has notified; the matcher and post-match run.
Each page must show exactly one match notification: from the socket, or (the blocked one)
from the catch-up read after reconnecting. The first pair chats both ways; after a reload
no second notification shows and the history holds both messages. The fifth user can
neither see, nor join, nor read the first pair's room. Screenshots go to
build/web-screenshots/ (docs/web.md).

Its own topics (prefix), embedding consumer group and matcher transactional id, with the
production ingress on the port Nakama's RPCs call, so nothing else on the stack is in the
way (tests/e2e/test_run_all.py does the same).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from app.demo_data import make_personas, write_insights
from app.web import WebServer
from mosaic.errors import StackError
from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.settings import Settings
from producers.bootstrap import build_production_app, serve_in_thread
from stack.base import Service, port_open, wait_until
from stack.services import build
from tests.e2e.web_steps import (
    PAGE_MS,
    POLL_MS,
    Stack,
    User,
    drop_socket,
    embed,
    notices_of,
    open_client,
    opt_in,
    postmatch,
    shoot,
    sign_in,
    status_of,
    tick_and_match,
)
from tests.pages import launch_chromium
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.e2e

RECONNECT_MS = 40_000  # the client's backoff tops out at 15 s between attempts


@dataclass
class Matched:
    settings: Settings
    a: User  # a and b: a pair; b's socket dropped mid-cycle, back before the notification
    b: User
    c: User  # c and d: a pair; d's socket down from the tick until post-match has notified
    d: User
    third: User  # signed in, never opted in
    cycle_id: str
    group_ids: list[str]
    socket_drop: dict[str, Any] = field(default_factory=dict)
    while_down: dict[str, Any] = field(default_factory=dict)

    @property
    def users(self) -> list[User]:
        return [self.a, self.b, self.c, self.d, self.third]


def _own_settings(settings: Settings, tag: str) -> Settings:
    own = with_topic_prefix(settings, f"web{tag}.")
    return own.model_copy(update={
        "embedding_agent": own.embedding_agent.model_copy(
            update={"group_id": f"web{tag}-embedding"}),
        "matcher": own.matcher.model_copy(update={"transactional_id": f"web{tag}-matcher"}),
    })


@pytest.fixture(scope="module")
def stack(settings: Settings, kafka_stack: Service, cassandra_stack: Service,
          nakama_stack: Service, s3_stack: Service) -> Iterator[Stack]:
    for service in build(settings, ["oidc", "authhook"]):  # sign-in form, ID-token check
        if not service.healthy():  # running already under the stack scripts or Docker
            service.up()
    host, port = settings.ingress.host, settings.ingress.port
    try:  # another test's ingress may still be stopping there
        wait_until(lambda: not port_open(host, port), what="a free ingress port",
                   timeout=60)
    except StackError:
        pytest.fail(f"{host}:{port} is still taken after 60 s; Nakama's runtime env sends "
                    "RPCs there, so this test serves its own ingress on it")
    own = _own_settings(settings, uuid.uuid4().hex[:8])
    with own_topics(own):
        ingress = serve_in_thread(build_production_app(own), host, port)
        web = WebServer(own, port=0).start()
        try:
            yield Stack(own, web.url)
        finally:
            web.stop()
            ingress.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as running:
        yield running


# -- the flow: sign in, opt in, seekers, tick (sockets dropped), rooms and notifications ---

def _seekers_waiting(stack: Stack, a: User, seekers: list[User]) -> None:
    shoot(a, "signed-out")
    for user in seekers:
        sign_in(user)
    for user in seekers[:4]:
        opt_in(user)
    expect(a.testid("status-view"), "status after the opt-in").to_have_attribute(
        "data-state", "preparing_profile", timeout=POLL_MS)
    shoot(a, "preparing")
    embed(stack, seekers[:4])
    shoot(a, "waiting")


def _cycle(stack: Stack, users: list[User]) -> Matched:
    a, b, c, d, third = users
    drop: dict[str, Any] = {}

    def mid_cycle() -> None:
        drop.update(drop_socket(b, shot="socket-lost"))
        d.block_sockets(True)
        drop_socket(d)

    cycle_id = tick_and_match(stack, 2, mid_cycle)
    expect(b.testid("socket-banner"), "the dropped socket reconnects").to_have_attribute(
        "data-state", "connected", timeout=PAGE_MS)
    drop["reconnected"] = not b.testid("socket-banner").is_visible()
    group_ids = postmatch(stack, cycle_id, [(a, b), (c, d)], a.page)
    d.page.wait_for_timeout(1000)
    down = {"shown": notices_of(d), "refused": d.block_sockets(False),
            "banner": d.testid("socket-banner").get_attribute("data-state")}
    return Matched(stack.settings, a, b, c, d, third, cycle_id, group_ids, drop, down)


@pytest.fixture(scope="module")
def matched(stack: Stack, browser: Browser) -> Iterator[Matched]:
    from profiles.bootstrap import build_insight_store

    personas = make_personas(8, uuid.uuid4().int % 2**30)
    # Round-robin over four interest clusters: 0 and 4 share one, 1 and 5 another.
    pairs = [personas[0], personas[4], personas[1], personas[5]]
    write_insights(build_insight_store(stack.settings), pairs, seed=7, now=datetime.now(UTC))
    users = [open_client(browser, stack, p, blockable=i == 3)
             for i, p in enumerate([*pairs, personas[2]])]
    try:
        _seekers_waiting(stack, users[0], users)
        yield _cycle(stack, users)
    finally:
        for user in users:
            user.context.close()


def what_the_user_has(matched: Matched, user: User) -> str:
    """For a failure message: the page's state and what Nakama holds for the user."""
    client = NakamaClient(matched.settings.nakama,
                          id_tokens=LocalIssuer(matched.settings.identity))
    try:
        session = client.login(user.persona.user_id)
        held = [(n.get("code"), n.get("create_time"), n.get("content"))
                for n in client.notifications(session)]
    finally:
        client.close()
    return (f"page: status {status_of(user)} ({user.testid('status-text').inner_text()!r}), "
            f"socket {user.testid('socket-banner').get_attribute('data-state')}, "
            f"errors {user.log.errors}; Nakama notifications of the user: {held}; "
            f"cycle {matched.cycle_id}, groups {matched.group_ids}")


def the_one_notice(matched: Matched, me: User, partner: User, group_id: str,
                   timeout: float = PAGE_MS) -> dict[str, Any]:
    """The page shows exactly one match notification, for this cycle and partner, and the
    match view of the room."""
    try:
        expect(me.testid("match-notification")).to_have_count(1, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{me.name}'s match notification: {exc}\n"
                             f"{what_the_user_has(matched, me)}") from None
    (shown,) = notices_of(me)
    assert (shown["cycleId"], shown["partnerId"]) == (matched.cycle_id, partner.user_id)
    expect(me.testid("match-view"), "the match view").to_be_visible(timeout=POLL_MS)
    expect(me.testid("match-view")).to_have_attribute("data-group-id", group_id)
    expect(me.testid("match-partner-name")).not_to_be_empty()
    return shown


def test_each_page_shows_its_match_once_as_a_socket_event(matched: Matched) -> None:
    latencies = []
    first, second = matched.group_ids
    for me, partner, group in ((matched.a, matched.b, first), (matched.b, matched.a, first),
                               (matched.c, matched.d, second)):
        shown = the_one_notice(matched, me, partner, group)
        assert shown["source"] == "socket", (me.name, shown)
        expect(me.testid("notifications")).to_have_attribute("aria-live", "polite")
        latencies.append(int(shown["shownMs"]) - int(shown["createdMs"]))
    shoot(matched.a, "matched")
    print(f"\nnotification write (Nakama create_time) -> shown in the page, ms: {latencies}; "
          f"median {statistics.median(latencies):.0f}, worst {max(latencies)}")
    assert all(-1000 < ms < 10_000 for ms in latencies), latencies


def test_a_socket_dropped_mid_cycle_reconnects_and_the_match_shows_once(
        matched: Matched) -> None:
    drop = matched.socket_drop
    assert drop["visible"] and "reconnecting" in drop["banner"].lower(), drop
    assert drop["reconnected"], drop
    expect(matched.b.testid("match-notification")).to_have_count(1, timeout=PAGE_MS)
    matched.b.page.wait_for_timeout(2000)  # a late duplicate would show by now
    expect(matched.b.testid("match-notification")).to_have_count(1)


def test_a_match_sent_while_the_socket_was_down_shows_once_after_reconnecting(
        matched: Matched) -> None:
    d, down = matched.d, matched.while_down
    assert down["shown"] == [] and down["refused"] >= 1, down  # really kept off the socket
    assert down["banner"] == "reconnecting", down
    expect(d.testid("socket-banner"), "the blocked socket reconnects once let through"
           ).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
    shown = the_one_notice(matched, d, matched.c, matched.group_ids[1])
    assert shown["source"] == "catch-up", shown
    d.page.wait_for_timeout(2000)  # a duplicate (socket and catch-up both) would show now
    expect(d.testid("match-notification")).to_have_count(1)
    d.page.reload()
    expect(d.testid("socket-banner")).to_have_attribute("data-state", "connected",
                                                        timeout=PAGE_MS)
    d.page.wait_for_timeout(3000)  # the catch-up read after connecting is done by now
    assert notices_of(d) == [], "a second notification after the reload"


def open_chat(user: User) -> None:
    user.testid("chat-open-button").click()
    expect(user.testid("chat-view"), f"{user.persona.name} joins the room's channel (page "
           f"errors: {user.log.errors})").to_have_attribute("data-state", "joined",
                                                            timeout=PAGE_MS)


def say(user: User, text: str) -> None:
    user.testid("chat-input").fill(text)
    user.testid("chat-send").click()


def chat_lines(user: User) -> list[tuple[str, str]]:
    return [(str(line.get_attribute("data-sender")), line.inner_text())
            for line in user.testid("chat-message").all()]


def test_chat_both_ways_and_history_after_a_reload(matched: Matched) -> None:
    a, b = matched.a, matched.b
    for user in (a, b):
        open_chat(user)
    hello, reply = f"hello from {a.persona.name}", f"hi {a.persona.name}, {b.persona.name} here"
    say(a, hello)
    expect(b.testid("chat-message"), "A's message reaches B").to_have_count(1, timeout=PAGE_MS)
    say(b, reply)
    for user in (a, b):
        expect(user.testid("chat-message")).to_have_count(2, timeout=PAGE_MS)
    assert chat_lines(a) == [("me", hello), ("partner", reply)]
    assert chat_lines(b) == [("partner", hello), ("me", reply)]
    shoot(a, "chat")
    for user in (a, b):
        user.page.reload()
        expect(user.testid("app")).to_have_attribute("data-phase", "ready", timeout=PAGE_MS)
        expect(user.testid("socket-banner")).to_have_attribute("data-state", "connected",
                                                               timeout=PAGE_MS)
        expect(user.testid("match-view"), "the match after a reload").to_be_visible(
            timeout=POLL_MS)
    a.page.wait_for_timeout(3000)  # the catch-up read after connecting is done by now
    for user in (a, b):
        assert notices_of(user) == [], f"{user.persona.name}: a second notification"
        open_chat(user)
        expect(user.testid("chat-message"), "the history after a reload").to_have_count(
            2, timeout=PAGE_MS)
    assert chat_lines(a) == [("me", hello), ("partner", reply)]
    assert chat_lines(b) == [("partner", hello), ("me", reply)]


JOIN_OVER_SOCKET = """async ([url, token, groupId]) => {
  const ws = new WebSocket(`${url}/ws?lang=en&status=false&token=${token}`);
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  const reply = new Promise(ok => { ws.onmessage = m => ok(JSON.parse(m.data)); });
  ws.send(JSON.stringify({cid: "1", channel_join: {target: groupId, type: 3,
                                                    persistence: true, hidden: false}}));
  const answer = await reply;
  ws.close();
  return answer;
}"""


def test_a_third_user_cannot_see_join_or_read_the_room(matched: Matched, stack: Stack) -> None:
    third, gid = matched.third, matched.group_ids[0]
    assert notices_of(third) == [] and not third.testid("match-view").is_visible()
    assert status_of(third) == "not_opted_in", status_of(third)
    client = NakamaClient(stack.settings.nakama, id_tokens=LocalIssuer(stack.settings.identity))
    session = client.login(third.persona.user_id)  # the same Nakama user as the page's
    assert session.user_id == third.user_id
    http = httpx.Client(base_url=stack.settings.nakama.url, timeout=15, trust_env=False,
                        headers={"Authorization": f"Bearer {session.token}"})
    secrets = (gid, matched.a.user_id, matched.b.user_id)
    try:
        listings: list[tuple[str, dict[str, Any]]] = [
            ("/v2/group", {"name": "%", "limit": 100}), (f"/v2/group/{gid}/user", {"limit": 100}),
            (f"/v2/user/{matched.a.user_id}/group", {"limit": 100})]
        for path, params in listings:
            got = http.get(path, params=params)
            assert got.status_code == 403, (path, got.status_code, got.text[:300])
            assert not any(s in got.text for s in secrets), path
        assert http.post(f"/v2/group/{gid}/join").status_code == 403
        channel = str(matched.a.testid("chat-view").get_attribute("data-channel-id") or "")
        history = http.get(f"/v2/channel/{channel or '3.' + gid + '..'}", params={"limit": 10})
        assert history.status_code != 200 and "hello" not in history.text, history.text
        ws_url = stack.settings.nakama.url.replace("http", "ws", 1)
        reply = third.page.evaluate(JOIN_OVER_SOCKET, [ws_url, session.token, gid])
        assert "channel" not in reply and "error" in reply, reply
    finally:
        http.close()
        client.close()


def test_the_pages_logged_no_error_and_fetched_nothing_off_this_machine(
        matched: Matched) -> None:
    for user in matched.users:
        # Chromium logs each socket the test itself kept from connecting (d's, blocked).
        errors = [e for e in user.log.errors if "blocked-by-the-test" not in e]
        assert (errors, user.log.refused) == ([], []), user.name
    assert any("blocked-by-the-test" in e for e in matched.d.log.errors)

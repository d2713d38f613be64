"""The web client (web/, docs/web.md) end to end on the real stack, in a real browser
(Playwright driving Debian's chromium, tests/pages.py).

Two users with insights in S3 sign in through the OIDC issuer stand-in's form, each in a
browser context of their own, and opt in with the button; the embedding agent makes them
seekers; a tick runs the matcher; one user's socket is dropped mid-cycle and reconnects;
post-match creates the room and notifies. Each page must show exactly one match
notification that arrived on the socket; both open the chat and exchange a message each
way; after a reload no second notification shows and the history holds both messages. A
third signed-in user can neither see, nor join, nor read the room. The pages' screenshots
go to docs/web/ (docs/web.md shows them).

Its own topics (prefix), embedding consumer group and matcher transactional id, with the
production ingress on the port Nakama's RPCs call, so nothing else on the stack is in the
way (tests/e2e/test_run_all.py does the same).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.demo_data import Persona, make_personas, write_insights
from app.web import WebServer
from mosaic.nakama_client import LocalIssuer, NakamaClient
from mosaic.settings import Settings
from producers.bootstrap import build_production_app, serve_in_thread
from stack.base import Service, port_open
from stack.services import build
from tests.pages import PageLog, launch_chromium, watch
from tests.support import own_topics, with_topic_prefix

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "web"
VIEWPORT = {"width": 720, "height": 640}
PAGE_MS = 20_000  # a page's own step (sign-in, a button, a socket event)
POLL_MS = 30_000  # what the page learns by its status poll (every 5 s)
AGENT_SECONDS = 120  # the embedding agent (loads the model on its first batch)


@dataclass
class Stack:
    settings: Settings
    web_url: str


@dataclass
class User:
    persona: Persona
    context: BrowserContext
    page: Page
    log: PageLog
    user_id: str = ""

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)


@dataclass
class Matched:
    settings: Settings
    a: User
    b: User
    third: User
    cycle_id: str
    group_id: str
    socket_drop: dict[str, Any] = field(default_factory=dict)
    notices: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    for service in build(settings, ["oidc", "authhook"]):
        service.up()  # the sign-in form and Nakama's ID-token check
    host, port = settings.ingress.host, settings.ingress.port
    if port_open(host, port):
        pytest.fail(f"{host}:{port} is taken; Nakama's runtime env sends RPCs there")
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


# -- the pages ----------------------------------------------------------------------------

def shoot(user: User, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    user.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_client(browser: Browser, stack: Stack, persona: Persona) -> User:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    log = watch(context)
    page = context.new_page()
    page.goto(stack.web_url)
    user = User(persona, context, page, log)
    expect(user.testid("app"), "the page loads signed out").to_have_attribute(
        "data-phase", "signed-out", timeout=PAGE_MS)
    return user


def sign_in(user: User) -> None:
    """The OIDC flow: the page's button -> the issuer's form -> back with a code."""
    user.testid("signin-button").click()
    user.testid("signin-user").fill(user.persona.user_id)
    user.testid("signin-submit").click()
    expect(user.testid("app"), f"{user.persona.name} signs in through the issuer's form "
           f"(page errors: {user.log.errors})").to_have_attribute(
        "data-phase", "ready", timeout=PAGE_MS)
    expect(user.testid("socket-banner")).to_have_attribute("data-state", "connected",
                                                           timeout=PAGE_MS)
    user.user_id = str(user.testid("whoami").get_attribute("data-user-id"))
    assert user.user_id, "whoami carries no Nakama user id"


def opt_in(user: User) -> None:
    user.testid("optin-button").click()
    expect(user.testid("optin-button"), f"{user.persona.name}'s opt-in "
           f"(action message, page errors: {user.log.errors})").to_have_attribute(
        "data-state", "success", timeout=PAGE_MS)


def status_of(user: User) -> str:
    return str(user.testid("status-view").get_attribute("data-state"))


def notices_of(user: User) -> list[dict[str, Any]]:
    return list(user.page.eval_on_selector_all(
        "[data-testid=match-notification]",
        "els => els.map(e => ({...e.dataset}))"))


# -- the back end ------------------------------------------------------------------------

class Worker:
    """A stack agent in a thread; its error (if it dies) is kept for the failure message."""

    def __init__(self, name: str, target: Callable[[threading.Event], Any]) -> None:
        self.name, self.stop, self.error = name, threading.Event(), ""
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(target,), name=name,
                                       daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[threading.Event], Any]) -> None:
        try:
            self.result = target(self.stop)
        except Exception as exc:  # noqa: BLE001 - reported by the test that waits
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)

    def why(self) -> str:
        alive = "running" if self.thread.is_alive() else "stopped"
        return f"{self.name} {alive}; error: {self.error or 'none'}; result: {self.result}"


def wait_for(what: str, done: Callable[[], bool], seconds: float, page: Page,
             explain: Callable[[], str]) -> None:
    """Poll ``done`` (the pages keep running meanwhile); fail with ``explain()``."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {seconds:.0f} s; {explain()}")
        page.wait_for_timeout(500)


def embed(stack: Stack, users: list[User]) -> None:
    """The embedding agent makes both users seekers; their pages say 'waiting'."""
    from consumers.embedding_worker import run_embedding_worker
    from mosaic.cassandra import connect
    from mosaic.user_state import read_states

    agent = Worker("embedding agent", lambda stop: run_embedding_worker(
        stack.settings, stop=stop, max_seconds=AGENT_SECONDS))
    session = connect(stack.settings.cassandra)

    def explain() -> str:
        states = read_states(session, stack.settings.cassandra.keyspace,
                             [u.persona.user_id for u in users])
        return (f"pages: {[status_of(u) for u in users]}, user_state: {states}, "
                f"{agent.why()}, page errors: {[u.log.errors for u in users]}")

    try:
        wait_for("both pages show 'waiting' after the embedding agent",
                 lambda: all(status_of(u) == "waiting" for u in users),
                 AGENT_SECONDS, users[0].page, explain)
    finally:
        agent.finish()
        session.cluster.shutdown()


def tick_and_match(stack: Stack, after_tick: Callable[[], None]) -> str:
    """A tick, then ``after_tick()`` (mid-cycle), then the matcher; the cycle id."""
    from matcher.service import MatcherService
    from matcher.service_commands import build_block_store
    from producers.ticker import publish_tick

    pool = stack.settings.matcher.pools[0]  # the page opts in to the default pool
    tick = publish_tick(stack.settings, pool, cycle_seconds=1)  # a cycle id of this run
    after_tick()
    with MatcherService(stack.settings, blocks=build_block_store(stack.settings)) as service:
        cycles = service.run(stop_when_idle=True, max_seconds=120)
    mine = [c for c in cycles if c.cycle_id == tick.cycle_id]
    assert mine and mine[-1].outcome == "completed" and mine[-1].pairs == 1, (
        f"matcher: cycle {tick.cycle_id} of pool {pool}: {mine or cycles}")
    return tick.cycle_id


def postmatch(stack: Stack, cycle_id: str, users: list[User]) -> str:
    """Rooms and notifier until the pair's audit row is complete; the room's group id."""
    from consumers.postmatch_app import build_postmatch, run_postmatch

    app = build_postmatch(stack.settings)
    agents = Worker("post-match agents", lambda stop: run_postmatch(app, stop=stop.is_set))
    subs = {u.persona.user_id for u in users}

    def ours() -> list[Any]:
        return [r for r in app.audit.rows(cycle_id) if {r.user1_id, r.user2_id} == subs]

    try:
        wait_for(f"post-match finishes the pair of {cycle_id}",
                 lambda: any(r.complete for r in ours()), 90, users[0].page,
                 lambda: f"audit rows: {app.audit.rows(cycle_id)}, {agents.why()}")
        return str(ours()[0].nakama_group_id)
    finally:
        agents.finish()
        app.close()


def drop_socket(user: User) -> dict[str, Any]:
    """Close the page's socket as a lost connection would; the banner shows, then it is
    connected again (the client's backoff)."""
    banner = user.testid("socket-banner")
    user.page.evaluate("window.mosaicClient.dropSocket()")
    expect(banner, "the socket-lost banner").to_have_attribute("data-state", "reconnecting",
                                                               timeout=PAGE_MS)
    seen = {"banner": banner.inner_text(), "visible": banner.is_visible()}
    shoot(user, "socket-lost")
    return seen


# -- the flow: sign in, opt in, seekers, tick (one socket dropped), rooms and notifications

@pytest.fixture(scope="module")
def matched(stack: Stack, browser: Browser) -> Iterator[Matched]:
    from profiles.bootstrap import build_insight_store

    personas = make_personas(5, uuid.uuid4().int % 2**30)
    pair = [personas[0], personas[4]]  # one interest cluster (round-robin over four)
    write_insights(build_insight_store(stack.settings), pair, seed=7, now=datetime.now(UTC))
    a, b, third = (open_client(browser, stack, p) for p in (*pair, personas[1]))
    try:
        shoot(a, "signed-out")
        for user in (a, b, third):
            sign_in(user)
        for user in (a, b):
            opt_in(user)
        expect(a.testid("status-view"), "status after the opt-in").to_have_attribute(
            "data-state", "preparing_profile", timeout=POLL_MS)
        shoot(a, "preparing")
        embed(stack, [a, b])
        shoot(a, "waiting")
        drop: dict[str, Any] = {}
        cycle_id = tick_and_match(stack, lambda: drop.update(drop_socket(b)))
        expect(b.testid("socket-banner"), "the dropped socket reconnects").to_have_attribute(
            "data-state", "connected", timeout=PAGE_MS)
        drop["reconnected"] = not b.testid("socket-banner").is_visible()
        group_id = postmatch(stack, cycle_id, [a, b])
        yield Matched(stack.settings, a, b, third, cycle_id, group_id, drop)
    finally:
        for user in (a, b, third):
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
            f"cycle {matched.cycle_id}, group {matched.group_id}")


def test_each_page_shows_its_match_once_as_a_socket_event(matched: Matched) -> None:
    latencies = []
    for me, partner in ((matched.a, matched.b), (matched.b, matched.a)):
        try:
            expect(me.testid("match-notification")).to_have_count(1, timeout=PAGE_MS)
        except AssertionError as exc:
            raise AssertionError(f"{me.persona.name}'s match notification: {exc}\n"
                                 f"{what_the_user_has(matched, me)}") from None
        (shown,) = notices_of(me)
        assert shown["source"] == "socket", shown
        assert (shown["cycleId"], shown["partnerId"]) == (matched.cycle_id, partner.user_id)
        expect(me.testid("notifications")).to_have_attribute("aria-live", "polite")
        expect(me.testid("match-view"), "the match view").to_be_visible(timeout=POLL_MS)
        expect(me.testid("match-view")).to_have_attribute("data-group-id", matched.group_id)
        expect(me.testid("match-partner-name")).not_to_be_empty()
        latencies.append(int(shown["shownMs"]) - int(shown["createdMs"]))
        matched.notices[me.persona.name] = shown
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
    third, gid = matched.third, matched.group_id
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
    for user in (matched.a, matched.b, matched.third):
        assert (user.log.errors, user.log.refused) == ([], []), user.persona.name

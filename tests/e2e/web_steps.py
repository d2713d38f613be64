"""Steps of tests/e2e/test_web_client.py: what a user does in the web client's page (by its
``data-testid``s, docs/web.md) and what the back end does meanwhile (the embedding agent, a
tick and the matcher, the post-match agents), each wait failing with its cause."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.demo_data import Persona
from mosaic.settings import Settings
from tests.pages import PageLog, watch

# Screenshots go to build/web-screenshots (ignored by git), so a test run leaves the tree
# clean; MOSAIC_WEB_SCREENSHOTS=docs/web refreshes the ones docs/web.md shows.
_ROOT = Path(__file__).resolve().parents[2]
SHOTS = _ROOT / os.environ.get("MOSAIC_WEB_SCREENSHOTS", "build/web-screenshots")
VIEWPORT = {"width": 720, "height": 640}
PAGE_MS = 20_000  # a page's own step (sign-in, a button, a socket event)
POLL_MS = 30_000  # what the page learns by its status poll (every 5 s)
AGENT_SECONDS = 120  # the embedding agent (loads the model on its first batch)


@dataclass
class Stack:
    settings: Settings
    web_url: str


# Added to a context's pages before their scripts: while ``__mosaicBlockSockets`` is set, a
# new Nakama socket goes to a port nothing listens on, so it fails at once as on a dead
# network (Playwright's WebSocket routing deadlocked beside the context's request routing).
BLOCKABLE_SOCKETS = """(() => {
  const Real = window.WebSocket;
  window.__mosaicRefusedSockets = 0;
  window.WebSocket = class extends Real {
    constructor(url, protocols) {
      const blocked = window.__mosaicBlockSockets && String(url).includes("/ws?");
      if (blocked) window.__mosaicRefusedSockets += 1;
      super(blocked ? "ws://127.0.0.1:1/blocked-by-the-test" : url, protocols);
    }
  };
})();"""


@dataclass
class User:
    persona: Persona
    context: BrowserContext
    page: Page
    log: PageLog
    blockable: bool = False
    user_id: str = ""

    @property
    def name(self) -> str:
        return self.persona.name

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    def block_sockets(self, blocked: bool) -> int:
        """Refuse (or let through again) the page's new sockets; how many were refused."""
        assert self.blockable, f"{self.name}'s context was opened without blockable=True"
        return int(self.page.evaluate(
            "b => { window.__mosaicBlockSockets = b; return window.__mosaicRefusedSockets; }",
            blocked))


# -- the page ------------------------------------------------------------------------------

def shoot(user: User, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    user.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_client(browser: Browser, stack: Stack, persona: Persona, *,
                blockable: bool = False) -> User:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    log = watch(context)
    if blockable:
        context.add_init_script(BLOCKABLE_SOCKETS)
    page = context.new_page()
    page.goto(stack.web_url)
    user = User(persona, context, page, log, blockable)
    expect(user.testid("app"), "the page loads signed out").to_have_attribute(
        "data-phase", "signed-out", timeout=PAGE_MS)
    return user


def sign_in(user: User) -> None:
    """The OIDC flow: the page's button -> the issuer's form -> back with a code."""
    user.testid("signin-button").click()
    user.testid("signin-user").fill(user.persona.user_id)
    user.testid("signin-submit").click()
    try:
        expect(user.testid("app")).to_have_attribute("data-phase", "ready", timeout=PAGE_MS)
    except AssertionError as exc:
        banner = user.testid("error-banner")
        shown = banner.inner_text() if banner.is_visible() else "none"
        raise AssertionError(f"{user.name} did not sign in through the issuer's form: the "
                             f"page's error banner: {shown}; page errors: {user.log.errors}"
                             f"\n{exc}") from None
    expect(user.testid("socket-banner")).to_have_attribute("data-state", "connected",
                                                           timeout=PAGE_MS)
    user.user_id = str(user.testid("whoami").get_attribute("data-user-id"))
    assert user.user_id, "whoami carries no Nakama user id"


def opt_in(user: User) -> None:
    user.testid("optin-button").click()
    expect(user.testid("optin-button"), f"{user.name}'s opt-in "
           f"(page errors: {user.log.errors})").to_have_attribute(
        "data-state", "success", timeout=PAGE_MS)


def status_of(user: User) -> str:
    return str(user.testid("status-view").get_attribute("data-state"))


def notices_of(user: User) -> list[dict[str, Any]]:
    return list(user.page.eval_on_selector_all(
        "[data-testid=match-notification]", "els => els.map(e => ({...e.dataset}))"))


def drop_socket(user: User, *, shot: str | None = None) -> dict[str, Any]:
    """Close the page's socket as a lost connection would; the banner must show."""
    banner = user.testid("socket-banner")
    user.page.evaluate("window.mosaicClient.dropSocket()")
    expect(banner, f"{user.name}'s socket-lost banner").to_have_attribute(
        "data-state", "reconnecting", timeout=PAGE_MS)
    seen = {"banner": banner.inner_text(), "visible": banner.is_visible()}
    if shot:
        shoot(user, shot)
    return seen


# -- the back end --------------------------------------------------------------------------

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
    """The embedding agent makes the users seekers; their pages say 'waiting'."""
    from consumers.embedding.worker import run_embedding_worker
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
        wait_for("every page shows 'waiting' after the embedding agent",
                 lambda: all(status_of(u) == "waiting" for u in users),
                 AGENT_SECONDS, users[0].page, explain)
    finally:
        agent.finish()
        session.cluster.shutdown()


def tick_and_match(stack: Stack, pairs: int, after_tick: Callable[[], None]) -> str:
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
    assert mine and mine[-1].outcome == "completed" and mine[-1].pairs == pairs, (
        f"matcher: cycle {tick.cycle_id} of pool {pool}: {mine or cycles}")
    return tick.cycle_id


def postmatch(stack: Stack, cycle_id: str, pairs: list[tuple[User, User]],
              page: Page) -> list[str]:
    """Rooms and notifier until each pair's audit row is complete; the rooms' group ids
    (in the order of ``pairs``)."""
    from consumers.postmatch.app import build_postmatch, run_postmatch

    app = build_postmatch(stack.settings)
    agents = Worker("post-match agents", lambda stop: run_postmatch(app, stop=stop.is_set))
    wanted = [{a.persona.user_id, b.persona.user_id} for a, b in pairs]

    def rows() -> list[Any]:
        found = {frozenset((r.user1_id, r.user2_id)): r for r in app.audit.rows(cycle_id)
                 if r.complete}
        return [found.get(frozenset(users)) for users in wanted]

    try:
        wait_for(f"post-match finishes the pairs of {cycle_id}",
                 lambda: all(rows()), 90, page,
                 lambda: f"audit rows: {app.audit.rows(cycle_id)}, {agents.why()}")
        return [str(row.nakama_group_id) for row in rows()]
    finally:
        agents.finish()
        app.close()

"""The web client's session upkeep in a real browser (Debian's chromium under Playwright)
against the real OIDC issuer stand-in and Nakama: an ID token about to expire is renewed
with the refresh token grant; when it cannot be renewed the page signs out and says so."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from app.web import WebServer
from mosaic.errors import MosaicError
from mosaic.settings import Settings
from stack.base import Service
from tests.pages import launch_chromium, watch

pytestmark = pytest.mark.e2e

PAGE_MS = 20_000


@pytest.fixture(scope="module")
def web(settings: Settings, nakama_stack: Service) -> Iterator[WebServer]:
    try:
        server = WebServer(settings, port=0).start()
    except MosaicError as exc:
        pytest.fail(f"mosaic web cannot start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser, web: WebServer) -> Iterator[Page]:
    context = browser.new_context()
    watch(context)
    page = context.new_page()
    page.goto(f"{web.url}/")
    yield page
    context.close()


def _sign_in(page: Page, sub: str) -> None:
    page.get_by_test_id("signin-button").click()
    page.get_by_test_id("signin-user").fill(sub)
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("app")).to_have_attribute("data-phase", "ready", timeout=PAGE_MS)
    expect(page.get_by_test_id("socket-banner")).to_have_attribute("data-state", "connected",
                                                                   timeout=PAGE_MS)


def _stored_user(page: Page) -> tuple[str, dict[str, Any]]:
    """oidc-client-ts' stored user (sessionStorage) and its key."""
    keys = [k for k in page.evaluate("Object.keys(sessionStorage)") if k.startswith("oidc.user")]
    assert len(keys) == 1, f"stored OIDC users: {keys}"
    return keys[0], json.loads(page.evaluate("k => sessionStorage.getItem(k)", keys[0]))


def _store_user(page: Page, key: str, user: dict[str, Any]) -> None:
    page.evaluate("([k, v]) => sessionStorage.setItem(k, v)", [key, json.dumps(user)])


def test_an_expiring_id_token_is_renewed_with_the_refresh_token(page: Page) -> None:
    sub = str(uuid.uuid4())
    _sign_in(page, sub)
    key, user = _stored_user(page)
    grants: list[str] = []
    page.on("request", lambda r: grants.append(r.post_data or "")
            if r.url.endswith("/oauth2/token") else None)
    _store_user(page, key, {**user, "expires_at": int(time.time()) + 20})
    page.reload()
    expect(page.get_by_test_id("app"), "signed in again after the reload").to_have_attribute(
        "data-phase", "ready", timeout=PAGE_MS)
    assert [g.split("&")[0] for g in grants] == ["grant_type=refresh_token"], grants
    _, renewed = _stored_user(page)
    assert renewed["id_token"] != user["id_token"]
    assert renewed["profile"]["sub"] == sub
    expect(page.get_by_test_id("whoami")).to_contain_text(sub)


def test_a_session_that_cannot_be_renewed_signs_out_and_says_so(page: Page) -> None:
    _sign_in(page, str(uuid.uuid4()))
    key, user = _stored_user(page)
    _store_user(page, key, {**user, "expires_at": int(time.time()) - 5,
                            "refresh_token": "revoked"})
    page.reload()
    expect(page.get_by_test_id("app")).to_have_attribute("data-phase", "signed-out",
                                                         timeout=PAGE_MS)
    banner = page.get_by_test_id("error-banner")
    expect(banner).to_have_attribute("data-kind", "session_expired")
    expect(banner).to_have_text("Your session has expired. Please sign in again.")
    expect(page.get_by_test_id("signin-button")).to_be_visible()

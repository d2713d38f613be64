"""Fuzz the door: the live ingress' authentication layer (not the signed hallway behind it).

Malformed, missing, duplicated and oversized signature headers, timestamps at and across
the window edges, replayed nonces, path spellings (percent-encoding, dot segments,
trailing slashes, case, doubled slashes), key ids (current, previous, retired, unknown,
malformed, swapped) and query strings (added, changed, dropped, reordered parameters).
Requests go out byte for byte (http.client, no normalisation). Every answer is 4xx and never
5xx; only a correctly signed request for the exact path and query sent may get a 2xx. The
key-id and query cases go to the fast path and to the FastAPI routes alike (two servers)
and must get the same answer from both.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from mosaic.settings import Settings
from producers.bootstrap import build_production_app, serve_in_thread
from producers.signing import KEY_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from stack.base import Service

pytestmark = pytest.mark.integration

FUZZ = hypothesis_settings(max_examples=120, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])
SUFFIXES = ("opt-in-embedding", "opt-out", "block", "status")
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
PREVIOUS_ID, PREVIOUS_KEY = "rotated-0", "fuzz-previous-ingress-key"


class Door:
    def __init__(self, port: int, key: bytes, skew: int, key_id: str) -> None:
        self.port, self.key, self.skew, self.key_id = port, key, skew, key_id
        self.answers: list[int] = []

    def send(self, method: str, path: str, headers: list[tuple[str, str]],
             body: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        self.answers.append(response.status)
        assert response.status < 500, (method, path, headers, response.status)
        return response.status

    def signed(self, method: str, path: str, body: bytes, *,
               ts: int | None = None, nonce: str | None = None, key: bytes | None = None,
               key_id: str | None = None, query: str = "") -> list[tuple[str, str]]:
        ts = int(time.time()) if ts is None else ts
        nonce = nonce or uuid.uuid4().hex
        key_id = self.key_id if key_id is None else key_id
        signature = sign(self.key if key is None else key, method, path, ts, nonce, body,
                         key_id=key_id, query=query)
        return [(TIMESTAMP_HEADER, str(ts)), (NONCE_HEADER, nonce),
                (SIGNATURE_HEADER, signature), (KEY_ID_HEADER, key_id)]


def _serve(settings: Settings, *, fast_path: bool) -> Iterator[Door]:
    cfg = settings.ingress.model_copy(update={
        "state_store": "memory",
        "hmac_previous_keys": {PREVIOUS_ID: SecretStr(PREVIOUS_KEY)}})
    server = serve_in_thread(build_production_app(settings.model_copy(update={"ingress": cfg}),
                                                  fast_path=fast_path))
    yield Door(server.port, cfg.hmac_key.get_secret_value().encode(), cfg.clock_skew_seconds,
               cfg.hmac_key_id)
    server.stop()


@pytest.fixture(scope="module")
def door(settings: Settings, kafka_stack: Service) -> Iterator[Door]:
    """The production ingress: commands on the raw fast path, status on FastAPI."""
    yield from _serve(settings, fast_path=True)


@pytest.fixture(scope="module")
def route_door(settings: Settings, kafka_stack: Service) -> Iterator[Door]:
    """The same ingress without the fast path: every route through FastAPI."""
    yield from _serve(settings, fast_path=False)


def _request(suffix: str) -> tuple[str, str, bytes]:
    user = str(uuid.uuid4())  # a fresh user: per-user rate limits never interfere
    if suffix == "status":
        return "GET", f"/user/{user}/status", b""
    body = {"blocked_user_id": str(uuid.uuid4())} if suffix == "block" else {}
    return "POST", f"/user/{user}/{suffix}", json.dumps(body).encode()


def _refused(status: int) -> bool:
    return 400 <= status < 500


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), drop=st.sets(st.integers(0, 3), min_size=1),
       junk=st.lists(st.tuples(st.integers(0, 3), HEADER_TEXT), max_size=3))
def test_missing_or_malformed_headers(door: Door, suffix: str, drop: set[int],
                                      junk: list[tuple[int, str]]) -> None:
    method, path, body = _request(suffix)
    headers = [h for i, h in enumerate(door.signed(method, path, body)) if i not in drop]
    names = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, KEY_ID_HEADER)
    headers += [(names[i], value) for i, value in junk]
    assert _refused(door.send(method, path, headers, body))


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), which=st.integers(0, 3),
       size=st.sampled_from([65, 128, 1024, 8 * 1024, 60 * 1024]),
       bad_first=st.booleans())
def test_oversized_and_duplicated_headers(door: Door, suffix: str, which: int, size: int,
                                          bad_first: bool) -> None:
    method, path, body = _request(suffix)
    good = door.signed(method, path, body)
    name = good[which][0]
    oversized = [*good[:which], (name, "a" * size), *good[which + 1:]]
    assert _refused(door.send(method, path, oversized, body))
    # The same header twice (one right, one wrong) never counts as signed.
    wrong = (name, {0: "1", 3: "0" + good[which][1]}.get(which, "0" * len(good[which][1])))
    twice = [wrong, *good] if bad_first else [*good, wrong]
    assert _refused(door.send(method, path, twice, body))


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES),
       offset=st.one_of(st.integers(-3, 3), st.integers(-10**6, 10**6)),
       side=st.sampled_from([-1, 1]))
def test_timestamps_at_and_across_the_window_edges(door: Door, suffix: str, offset: int,
                                                   side: int) -> None:
    method, path, body = _request(suffix)
    ts = int(time.time()) + side * door.skew + offset
    status = door.send(method, path, door.signed(method, path, body, ts=ts), body)
    distance = abs(ts - time.time())
    if distance > door.skew + 2:
        assert status == 401
    elif distance < door.skew - 2:
        assert status in (200, 202)
    else:
        assert status in (200, 202, 401)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), tamper=st.sampled_from(["none", "body", "method"]))
def test_replayed_nonces_and_tampered_requests(door: Door, suffix: str, tamper: str) -> None:
    method, path, body = _request(suffix)
    headers = door.signed(method, path, body)
    assert door.send(method, path, headers, body) in (200, 202)
    assert door.send(method, path, headers, body) == 401  # replay
    if tamper == "body" and method == "POST":
        fresh = door.signed(method, path, body)
        assert door.send(method, path, fresh, body + b" ") == 401
    elif tamper == "method":
        other = "GET" if method == "POST" else "POST"
        assert _refused(door.send(other, path, door.signed(method, path, body), body))


def _spellings(path: str) -> list[str]:
    prefix, user, suffix = path.rsplit("/", 2)[0], path.split("/")[2], path.rsplit("/", 1)[1]
    first = user[0]
    return [
        f"/user/%{ord(first):02X}{user[1:]}/{suffix}",  # percent-encoded letter
        f"/user/{user}/{suffix[:-1]}%{ord(suffix[-1]):02x}",
        f"/user/{user}%0A/{suffix}",  # encoded newline
        f"/user/{user}%2F/{suffix}",  # encoded slash
        f"/user/{user}/./{suffix}",
        f"/user/x/../{user}/{suffix}",
        f"/user/{user}/{suffix}/",
        f"//user/{user}/{suffix}",
        f"/user//{user}/{suffix}",
        f"/USER/{user}/{suffix}",
        f"/user/{user}/{suffix.upper()}",
        f"/user/{user.upper()}/{suffix}",
        f"{prefix}/{user}/{suffix}?x=1",
    ]


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), index=st.integers(0, 12),
       signed_as=st.sampled_from(["canonical", "sent"]))
def test_path_spellings(door: Door, suffix: str, index: int, signed_as: str) -> None:
    method, path, body = _request(suffix)
    sent = _spellings(path)[index]
    signed_path = path if signed_as == "canonical" else sent.split("?", 1)[0]
    status = door.send(method, sent, door.signed(method, signed_path, body), body)
    if signed_path != sent.split("?", 1)[0]:
        assert _refused(status), (sent, status)  # signature made for another path
    elif "?" in sent:
        assert status == 401, (sent, status)  # a query the signature does not cover
    elif sent.split("?", 1)[0] != path:
        # Signed for exactly what was sent, but not the canonical route: no such route
        # (a different user's id in upper case is a different, valid user).
        assert _refused(status) or sent.startswith(f"/user/{path.split('/')[2].upper()}/")


KEY_IDS = st.one_of(
    st.sampled_from(["local-1", PREVIOUS_ID, "retired-0", "", "LOCAL-1", "local-1 ",
                     " local-1", "local-1,rotated-0", "local-1\t", "k" * 64, "k" * 65,
                     "local%2D1", "../local-1"]),
    HEADER_TEXT)
SIGNERS = {"current": None, "previous": PREVIOUS_KEY.encode(), "stranger": b"not-a-key-of-ours"}


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), signer=st.sampled_from(sorted(SIGNERS)),
       key_id=KEY_IDS)
def test_key_ids_on_both_entry_points(door: Door, route_door: Door, suffix: str, signer: str,
                                      key_id: str) -> None:
    method, path, body = _request(suffix)
    valid = {("current", door.key_id), ("previous", PREVIOUS_ID)}
    answers = []
    for d in (door, route_door):
        key = SIGNERS[signer] or d.key
        answers.append(d.send(method, path, d.signed(method, path, body, key=key,
                                                     key_id=key_id), body))
    if (signer, key_id) in valid:
        assert all(a in (200, 202) for a in answers), (signer, key_id, answers)
    else:
        assert answers == [401, 401], (signer, key_id, answers)


QUERY_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES),
       params=st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=4),
       change=st.sampled_from(["none", "reorder", "add", "change", "drop"]),
       plus=st.booleans())
def test_the_query_string_is_signed_on_both_entry_points(
        door: Door, route_door: Door, suffix: str, params: list[tuple[str, str]], change: str,
        plus: bool) -> None:
    method, path, body = _request(suffix)
    # Signed in one spelling ("+" or "%20" for a space), sent in another: both read the same.
    signed = urlencode(params) if plus else urlencode(params, quote_via=quote)
    sent_params = list(params)
    if change == "reorder":
        sent_params.reverse()
    elif change == "add":
        sent_params.append(("added", "1"))
    elif change == "change" and sent_params:
        sent_params[0] = (sent_params[0][0], sent_params[0][1] + "x")
    elif change == "drop" and sent_params:
        sent_params.pop(0)
    sent = urlencode(sent_params, quote_via=quote)
    changed = change in ("add", "change", "drop") and sent_params != params
    answers = []
    for d in (door, route_door):
        target = f"{path}?{sent}" if sent else path
        answers.append(d.send(method, target, d.signed(method, path, body, query=signed),
                              body))
    if changed:
        assert answers == [401, 401], (params, change, answers)
    else:
        assert all(a in (200, 202) for a in answers), (params, change, answers)


def test_no_unsigned_request_ever_got_through(door: Door) -> None:
    # Summary over the module: everything above answered, and 5xx never appeared.
    assert door.answers
    assert all(status < 500 for status in door.answers)

"""The batch post-match RPCs of nakama/modules/mosaic_rooms.lua on the REAL local Nakama and
its PostgreSQL: rooms, privacy through the client API, and the exactly-one notification
guard under injected faults (database errors, client timeouts, Nakama killed, concurrent
duplicate calls).

Users log in by custom id (a Cognito-sub-like UUID) through Nakama's client API; the
server-to-server RPCs are called with the runtime http_key like the post-match agents do.
Faults are injected in the real PostgreSQL (triggers created and dropped by the test) or
on the real Nakama process; what users got is read back from PostgreSQL and through the
client API.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mosaic.errors import ExternalServiceError
from mosaic.nakama_client import LocalIssuer, NakamaClient, Session
from mosaic.settings import Settings
from stack.base import Service
from stack.postgres import LOOPBACK, Postgres

pytestmark = pytest.mark.integration

NOTIFY_CODE = 101
JOIN_REQUEST_CODE = -5  # Nakama's "user wants to join your group" notification


# -- helpers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    custom_id: str
    user_id: str


class Rpc:
    """Server-to-server calls of the batch RPCs (runtime http_key, unwrapped payloads)."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.nakama.http_key.get_secret_value()
        self.http = httpx.Client(base_url=settings.nakama.url, timeout=55.0, trust_env=False)

    def call(self, rpc_id: str, body: dict[str, Any],
             timeout: httpx.Timeout | float | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return self.http.post(f"/v2/rpc/{rpc_id}", params={"http_key": self._key, "unwrap": ""},
                              content=json.dumps(body), **kwargs)

    def results(self, rpc_id: str, field: str, items: list[dict[str, str]]
                ) -> list[dict[str, Any]]:
        resp = self.call(rpc_id, {field: items})
        assert resp.status_code == 200, resp.text[:500]
        got: list[dict[str, Any]] = resp.json()["results"]
        assert len(got) == len(items)
        return got

    def rooms(self, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        return self.results("mosaic_create_rooms", "rooms", items)

    def notify(self, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        return self.results("mosaic_notify_matches", "notifications", items)

    def close(self) -> None:
        self.http.close()


class Sql:
    """psql against the stack's PostgreSQL as Nakama's own role (owner of its tables)."""

    def __init__(self, settings: Settings) -> None:
        pg = settings.postgres
        self._cmd = [Postgres(settings).tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                     "-h", LOOPBACK, "-p", str(pg.port), "-U", pg.user, "-d", pg.database,
                     "-At", "-F", "\t"]
        self._env = {**os.environ, "PGPASSWORD": pg.password.get_secret_value(),
                     "PGCONNECT_TIMEOUT": "5"}

    def rows(self, sql: str) -> list[list[str]]:
        proc = subprocess.run([*self._cmd, "-c", sql], capture_output=True, text=True,
                              env=self._env, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        return [line.split("\t") for line in proc.stdout.splitlines() if line]


def _in(values: list[str]) -> str:
    for v in values:  # everything inlined is a UUID or hex produced by this module
        assert all(c in "0123456789abcdefmm-" for c in v), v
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


def make_users(settings: Settings, count: int) -> list[User]:
    """Real Nakama accounts, created by custom-id login through the client API."""
    server_key = settings.nakama.server_key.get_secret_value()
    issuer = LocalIssuer(settings.identity)  # ID tokens, as Cognito gives the app

    def one(_: int) -> User:
        custom_id = str(uuid.uuid4())
        account = {"id": custom_id, "vars": {"id_token": issuer.mint(custom_id)}}
        with httpx.Client(base_url=settings.nakama.url, timeout=15.0, trust_env=False) as http:
            resp = http.post("/v2/account/authenticate/custom", params={"create": "true"},
                             json=account, auth=(server_key, ""))
        assert resp.status_code == 200, resp.text
        claims = resp.json()["token"].split(".")[1]
        uid = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["uid"]
        return User(custom_id, str(uid))

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def bulk_users(sql: Sql, count: int) -> list[User]:
    """Many accounts at once, inserted into Nakama's users table as AuthenticateCustom
    inserts them (id, username, custom_id; every other column has its default).

    The batch tests need hundreds of users; a login each goes through the ID-token hook
    (~90 ms per login on 2 cores), which would eat each test's time budget. The RPCs under
    test only read these rows, so the accounts are real to them; the tests about what a
    user sees log in through the client API (``make_users``, ``Player``).
    """
    rows = sql.rows(
        "INSERT INTO users (id, username, custom_id) SELECT gen_random_uuid(), "
        "'mmt' || substr(md5(random()::text || n), 1, 16), gen_random_uuid()::text "
        f"FROM generate_series(1, {int(count)}) AS n RETURNING id, custom_id")
    return [User(custom_id, uid) for uid, custom_id in rows]


def pair_key(a: User, b: User) -> str:
    return "|".join(sorted((a.custom_id, b.custom_id)))


@functools.cache
def _room_name_key() -> bytes:
    return Settings().nakama.room_name_key.get_secret_value().encode()


def room_name(cycle: str, key: str) -> str:
    """The room name mosaic_rooms.lua gives a pair: keyed with the server's room-name key."""
    mac = hmac.new(_room_name_key(), f"{cycle}\n{key}".encode(), hashlib.sha256)
    return "mm-" + mac.hexdigest()[:40]


def room_items(cycle: str, pairs: list[tuple[User, User]]) -> list[dict[str, str]]:
    return [{"cycle_id": cycle, "pair_key": pair_key(a, b), "user_a": a.custom_id,
             "user_b": b.custom_id} for a, b in pairs]


def note_items(cycle: str, pairs: list[tuple[User, User]],
               rooms: list[dict[str, Any]]) -> list[dict[str, str]]:
    items = []
    for (a, b), room in zip(pairs, rooms, strict=True):
        for user, partner in ((a, b), (b, a)):
            items.append({"cycle_id": cycle, "pair_key": pair_key(a, b),
                          "user": user.custom_id, "partner": partner.custom_id,
                          "group_id": room["group_id"], "channel_id": room["channel_id"]})
    return items


def pairs_of(users: list[User]) -> list[tuple[User, User]]:
    return [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)]


def groups_in_db(sql: Sql, names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> {id, open, edge_count, members: {user_id: state}} straight from PostgreSQL."""
    rows = sql.rows(
        "SELECT g.name, g.id, g.state, g.edge_count, coalesce(string_agg("
        "e.destination_id::text || '=' || e.state, ','), '') FROM groups g "
        "LEFT JOIN group_edge e ON e.source_id = g.id "
        f"WHERE g.name IN {_in(names)} GROUP BY g.name, g.id, g.state, g.edge_count")
    out = {}
    for name, gid, state, edges, members in rows:
        out[name] = {"id": gid, "open": state == "0", "edge_count": int(edges),
                     "members": dict(m.split("=") for m in members.split(",") if m)}
    return out


def notes_per_user(sql: Sql, cycle: str, users: list[User]) -> dict[str, int]:
    """user_id -> number of match notifications of ``cycle`` stored for that user."""
    rows = sql.rows(
        "SELECT u.id, count(n.id) FROM users u LEFT JOIN notification n ON n.user_id = u.id "
        f"AND n.code = {NOTIFY_CODE} AND n.content->>'cycle_id' = '{cycle}' "
        f"WHERE u.id IN {_in([u.user_id for u in users])} GROUP BY u.id")
    return {uid: int(n) for uid, n in rows}


def assert_rooms_private(sql: Sql, cycle: str, pairs: list[tuple[User, User]]) -> None:
    names = [room_name(cycle, pair_key(a, b)) for a, b in pairs]
    groups = groups_in_db(sql, names)
    assert len(groups) == len(pairs)
    for name, (a, b) in zip(names, pairs, strict=True):
        g = groups[name]
        assert not g["open"] and g["edge_count"] == 2, (name, g)
        assert g["members"] == {a.user_id: "0", b.user_id: "2"}, (name, g)


@pytest.fixture
def cycle(unique: str) -> str:
    # Same shape as real cycle ids: "<pool>:<timestamp>".
    return f"test-{unique}:20261129T050000Z"


class Trigger:
    """A BEFORE INSERT trigger that makes PostgreSQL refuse (or, with ``sleep``, hold up)
    the rows matching ``condition``."""

    def __init__(self, sql: Sql, table: str, condition: str, sleep: float = 0) -> None:
        self.sql, self.table = sql, table
        self.name = f"mosaic_test_fault_{uuid.uuid4().hex[:10]}"
        action = f"PERFORM pg_sleep({sleep})" if sleep else "RAISE EXCEPTION 'injected fault'"
        sql.rows(f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $f$ "
                 f"BEGIN IF {condition} THEN {action}; END IF; "
                 f"RETURN NEW; END $f$")
        sql.rows(f"CREATE TRIGGER {self.name} BEFORE INSERT ON {table} "
                 f"FOR EACH ROW EXECUTE FUNCTION {self.name}()")

    def drop(self) -> None:
        self.sql.rows(f"DROP TRIGGER IF EXISTS {self.name} ON {self.table}; "
                      f"DROP FUNCTION IF EXISTS {self.name}()")


# -- rooms --------------------------------------------------------------------------------

def test_batch_creates_private_rooms_idempotently(rpc: Rpc, sql: Sql, settings: Settings,
                                                  cycle: str) -> None:
    users = make_users(settings, 12)
    pairs = pairs_of(users)
    items = room_items(cycle, pairs)

    first = rpc.rooms(items)
    assert [r["pair_key"] for r in first] == [i["pair_key"] for i in items]
    assert all(r["ok"] and r["created"] for r in first), first
    assert all(r["cycle_id"] == cycle for r in first)
    assert all(r["channel_id"] == f"3.{r['group_id']}.." for r in first)
    assert len({r["group_id"] for r in first}) == len(pairs)
    assert_rooms_private(sql, cycle, pairs)

    again = rpc.rooms(items)
    assert [r["group_id"] for r in again] == [r["group_id"] for r in first]
    assert not any(r["created"] for r in again) and all(r["ok"] for r in again)
    assert_rooms_private(sql, cycle, pairs)


def test_unknown_and_banned_users_fail_alone_and_permanently(
        rpc: Rpc, sql: Sql, settings: Settings, cycle: str) -> None:
    users = make_users(settings, 6)
    good, banned_pair = (users[0], users[1]), (users[2], users[3])
    ghost = User(str(uuid.uuid4()), "")  # never logged in: no Nakama account
    sql.rows(f"UPDATE users SET disable_time = now() WHERE id = '{users[3].user_id}'")
    items = [*room_items(cycle, [good, banned_pair]),
             {"cycle_id": cycle, "pair_key": f"{users[4].custom_id}|{ghost.custom_id}",
              "user_a": users[4].custom_id, "user_b": ghost.custom_id}]

    results = rpc.rooms(items)
    assert results[0]["ok"] and results[0]["created"]
    assert results[1] == {"pair_key": items[1]["pair_key"], "cycle_id": cycle, "ok": False,
                          "permanent": True, "error": f"user_b is banned: {users[3].custom_id}"}
    assert results[2]["ok"] is False and results[2]["permanent"] is True
    assert results[2]["error"] == f"user_b does not exist: {ghost.custom_id}"
    # Nothing was created for the failed items.
    names = [room_name(cycle, i["pair_key"]) for i in items]
    assert list(groups_in_db(sql, names)) == [names[0]]

    room = results[0]
    notes = note_items(cycle, [good], [room]) + note_items(cycle, [banned_pair], [room])
    sent = rpc.notify(notes)
    assert [r["ok"] for r in sent] == [True, True, False, False]
    # users[2] exists, but a banned partner can never become a match.
    assert (sent[2]["permanent"], sent[2]["error"]) == (
        True, f"partner is banned: {users[3].custom_id}")
    assert (sent[3]["permanent"], sent[3]["error"]) == (
        True, f"user is banned: {users[3].custom_id}")
    counts = notes_per_user(sql, cycle, users[:4])
    assert counts == {users[0].user_id: 1, users[1].user_id: 1, users[2].user_id: 0,
                      users[3].user_id: 0}


def test_malformed_payloads_and_user_sessions_are_refused(rpc: Rpc, settings: Settings) -> None:
    bodies: list[dict[str, Any]] = [
        {}, {"rooms": []}, {"rooms": [{"cycle_id": "c"}]},
        {"rooms": [{"cycle_id": "c", "pair_key": "k", "user_a": "a", "user_b": 5}]},
        {"rooms": [{}] * 501}]
    for body in bodies:
        assert rpc.call("mosaic_create_rooms", body).status_code == 400, body
    assert rpc.call("mosaic_notify_matches", {"notifications": "x"}).status_code == 400
    client = NakamaClient(settings.nakama)
    try:
        session = client.login(str(uuid.uuid4()))
        for rpc_id in ("mosaic_create_rooms", "mosaic_notify_matches"):
            with pytest.raises(ExternalServiceError, match="403"):
                client.rpc(session, rpc_id, {"rooms": []})
    finally:
        client.close()


# -- privacy through the client API -------------------------------------------------------

class Player:
    """A user's app: the Nakama client API with the user's session."""

    def __init__(self, settings: Settings, custom_id: str | None = None) -> None:
        self._client = NakamaClient(settings.nakama)
        self.session: Session = self._client.login(custom_id or str(uuid.uuid4()))
        self.http = httpx.Client(base_url=settings.nakama.url, timeout=15.0, trust_env=False,
                                 headers={"Authorization": f"Bearer {self.session.token}"})

    @property
    def user(self) -> User:
        return User(self.session.custom_id, self.session.user_id)

    def notifications(self) -> list[dict[str, Any]]:
        return self._client.notifications(self.session)

    def close(self) -> None:
        self.http.close()
        self._client.close()


@pytest.fixture
def players(settings: Settings, nakama_stack: Service) -> Iterator[list[Player]]:
    made = [Player(settings) for _ in range(3)]
    yield made
    for p in made:
        p.close()


def test_rooms_stay_private_through_the_client_api(rpc: Rpc, sql: Sql, cycle: str,
                                                   players: list[Player]) -> None:
    alice, bob, mallory = players
    pairs = [(alice.user, bob.user)]
    room = rpc.rooms(room_items(cycle, pairs))[0]
    assert room["ok"], room
    gid = room["group_id"]
    assert rpc.notify(note_items(cycle, pairs, [room])) == [
        {"pair_key": pair_key(alice.user, bob.user), "user": alice.user.custom_id, "ok": True,
         "sent": True},
        {"pair_key": pair_key(alice.user, bob.user), "user": bob.user.custom_id, "ok": True,
         "sent": True}]
    subs = (alice.user.custom_id, bob.user.custom_id)

    # The name is keyed: the unkeyed hash of the cycle id and both subs names no group, so
    # knowing two subs does not confirm a pairing.
    name = room_name(cycle, pair_key(alice.user, bob.user))
    unkeyed = "mm-" + hashlib.sha256(
        f"{cycle}\n{pair_key(alice.user, bob.user)}".encode()).hexdigest()[:40]
    assert groups_in_db(sql, [name])[name]["id"] == gid
    assert groups_in_db(sql, [unkeyed]) == {}
    # What a member sees of the room: nothing that names a sub.
    listed = alice.http.get(f"/v2/user/{alice.user.user_id}/group", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    mine = [g["group"] for g in listed.json().get("user_groups", []) if g["group"]["id"] == gid]
    assert mine and mine[0]["name"] == name
    assert json.loads(mine[0]["metadata"]) == {"kind": "mosaic_match"}
    assert not mine[0].get("description") and not mine[0].get("avatar_url")
    assert not mine[0].get("open")
    for sub in subs:
        assert sub not in listed.text

    # A third user can neither join nor ask to join (no join request, no notification).
    join = mallory.http.post(f"/v2/group/{gid}/join")
    assert join.status_code == 403, join.text
    # A member can neither add the third user, nor open the group, nor accept anyone.
    add = alice.http.post(f"/v2/group/{gid}/add", params={"user_ids": mallory.user.user_id})
    assert add.status_code == 403, add.text
    opened = alice.http.put(f"/v2/group/{gid}", json={"open": True})
    assert opened.status_code == 403, opened.text
    promote = alice.http.post(f"/v2/group/{gid}/promote",
                              params={"user_ids": mallory.user.user_id})
    assert promote.status_code == 403, promote.text
    # Nobody can squat a room name before the server creates it.
    squat = mallory.http.post("/v2/group", json={"name": room_name(cycle, "next"),
                                                 "open": True})
    assert squat.status_code == 403, squat.text
    rename = mallory.http.post("/v2/group", json={"name": f"not-a-room-{uuid.uuid4()}"})
    assert rename.status_code == 200, rename.text
    renamed = mallory.http.put(f"/v2/group/{rename.json()['id']}",
                               json={"name": room_name(cycle, "later")})
    assert renamed.status_code == 403, renamed.text

    assert_rooms_private(sql, cycle, pairs)
    assert [n for n in alice.notifications() if n.get("code") == JOIN_REQUEST_CODE] == []

    # The notification names the partner by Nakama id and username, never by sub.
    for me, partner in ((alice, bob), (bob, alice)):
        notes = [n for n in me.notifications() if n.get("code") == NOTIFY_CODE]
        assert len(notes) == 1
        text = json.dumps(notes[0])
        assert not any(sub in text for sub in subs)
        content = json.loads(notes[0]["content"])
        assert content["partner_user_id"] == partner.user.user_id
        assert content["partner_username"]
        assert (content["group_id"], content["channel_id"]) == (gid, room["channel_id"])
        assert content["cycle_id"] == cycle
        assert len(content["mosaic_key"]) == 40
        assert notes[0]["subject"] == "You have a new match" and notes[0]["persistent"]


def test_join_is_refused_while_the_room_is_still_open(rpc: Rpc, sql: Sql, cycle: str,
                                                      players: list[Player]) -> None:
    """The window between create and close, held open on purpose.

    The RPC creates the group open (so the partner can join without a system
    notification) and closes it a few statements later; a client request landing in
    between would find an open group with one free seat. To hit that window
    deterministically, PostgreSQL refuses the partner's membership row (a trigger on
    group_edge): the RPC then stops right after creating the group, which stays open with
    only its creator. A third user's JoinGroup must still be refused by the module's
    before-hook (without it Nakama would admit them: the group is open and not full).
    Dropping the trigger and retrying completes and closes the room.
    """
    alice, bob, mallory = players
    pairs = [(alice.user, bob.user)]
    fault = Trigger(sql, "group_edge", f"NEW.destination_id = '{bob.user.user_id}' "
                                       f"OR NEW.source_id = '{bob.user.user_id}'")
    try:
        first = rpc.rooms(room_items(cycle, pairs))[0]
        assert first["ok"] is False and first["permanent"] is False, first
        name = room_name(cycle, pair_key(alice.user, bob.user))
        group = groups_in_db(sql, [name])[name]
        assert group["open"] and group["edge_count"] == 1  # the window, held open
        join = mallory.http.post(f"/v2/group/{group['id']}/join")
        assert join.status_code == 403, join.text
        add = alice.http.post(f"/v2/group/{group['id']}/add",
                              params={"user_ids": mallory.user.user_id})
        assert add.status_code == 403, add.text
    finally:
        fault.drop()
    retry = rpc.rooms(room_items(cycle, pairs))[0]
    assert retry["ok"] and retry["group_id"] == group["id"] and not retry["created"]
    assert_rooms_private(sql, cycle, pairs)


# -- the notification guard under faults --------------------------------------------------

def test_database_error_on_one_user_is_retryable_not_a_duplicate(
        rpc: Rpc, sql: Sql, settings: Settings, cycle: str) -> None:
    """PostgreSQL refuses every write of one user (triggers on notification AND storage).

    The old guard wrote a create-only storage claim and read ANY failure of that write as
    "already notified": here its claim write fails, so it answered sent=false/duplicate,
    the agent marked the user notified, and the user never got the notification (zero,
    forever). Checked by running the old module (commit 7ebd653) on a second Nakama
    against this database with the same two triggers: mosaic_notify_match answered
    200 {"duplicate":true,"sent":false} and the user had 0 notifications. This test fails
    on that behaviour: it asserts the item is NOT ok, the user has none, and the retry
    delivers exactly one. The new guard
    writes nothing but the notification row, keyed by the unique mosaic_key; a failed
    insert is reported as a retryable failure because the key is not in the table.
    """
    users = make_users(settings, 8)
    pairs = pairs_of(users)
    rooms = rpc.rooms(room_items(cycle, pairs))
    items = note_items(cycle, pairs, rooms)
    victim = users[2]
    faults = [Trigger(sql, table, f"NEW.user_id = '{victim.user_id}'")
              for table in ("notification", "storage")]
    try:
        results = rpc.notify(items)
        for item, r in zip(items, results, strict=True):
            if item["user"] == victim.custom_id:
                assert r["ok"] is False and r["permanent"] is False, r
                assert "injected fault" in r["error"]
            else:
                assert r["ok"] and r["sent"], r
        counts = notes_per_user(sql, cycle, users)
        assert counts[victim.user_id] == 0
        assert all(n == 1 for uid, n in counts.items() if uid != victim.user_id)
    finally:
        for fault in faults:
            fault.drop()
    retry = rpc.notify(items)
    assert all(r["ok"] for r in retry)
    assert [r["sent"] for r in retry] == [i["user"] == victim.custom_id for i in items]
    assert set(notes_per_user(sql, cycle, users).values()) == {1}


def test_a_dropped_guard_index_is_recreated_before_the_next_batch(
        rpc: Rpc, sql: Sql, settings: Settings, cycle: str) -> None:
    """The exactly-once guarantee rests on mosaic_notification_once; a batch never runs
    without it (the module recreates it, or refuses the batch)."""
    users = bulk_users(sql, 4)
    pairs = pairs_of(users)
    notes = note_items(cycle, pairs, rpc.rooms(room_items(cycle, pairs)))
    sql.rows("DROP INDEX IF EXISTS mosaic_notification_once")
    assert all(r["ok"] and r["sent"] for r in rpc.notify(notes))
    assert sql.rows("SELECT indexdef FROM pg_indexes WHERE indexname = "
                    "'mosaic_notification_once'") == [[
        "CREATE UNIQUE INDEX mosaic_notification_once ON public.notification USING btree "
        "(((content ->> 'mosaic_key'::text))) WHERE (code = 101)"]]
    assert not any(r["sent"] for r in rpc.notify(notes))
    assert set(notes_per_user(sql, cycle, users).values()) == {1}


def test_client_timeout_shorter_than_the_work_then_retry(
        rpc: Rpc, sql: Sql, settings: Settings, cycle: str) -> None:
    """The caller gives up (read timeout) while Nakama works on the batch.

    Nakama cancels an RPC whose caller has gone (the request context): the first call
    stops wherever it is, e.g. after creating a room it has not closed yet (measured: a
    400-user batch left 2 rooms, one still open with only its creator) or, for
    notifications, before or inside the INSERT (rolled back). The retry completes every
    room and leaves every user exactly one notification."""
    users = bulk_users(sql, 400)
    pairs = pairs_of(users)
    items = room_items(cycle, pairs)
    tiny = httpx.Timeout(10.0, read=0.05)  # the request is sent in full, the answer is not awaited
    with pytest.raises(httpx.ReadTimeout):
        rpc.call("mosaic_create_rooms", {"rooms": items}, timeout=tiny)
    rooms = rpc.rooms(items)
    assert all(r["ok"] for r in rooms), [r for r in rooms if not r["ok"]][:3]
    notes = note_items(cycle, pairs, rooms)
    with pytest.raises(httpx.ReadTimeout):
        rpc.call("mosaic_notify_matches", {"notifications": notes},
                 timeout=httpx.Timeout(10.0, read=0.005))
    results = rpc.notify(notes)
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]
    assert_rooms_private(sql, cycle, pairs)
    assert set(notes_per_user(sql, cycle, users).values()) == {1}


def test_concurrent_duplicate_calls_deliver_exactly_once(
        rpc: Rpc, sql: Sql, settings: Settings, cycle: str) -> None:
    users = bulk_users(sql, 400)
    pairs = pairs_of(users)
    items = room_items(cycle, pairs)
    barrier = threading.Barrier(2)

    def both(fn: tuple[str, str], batch: list[dict[str, str]]
             ) -> list[list[dict[str, Any]]]:
        def run(_: int) -> list[dict[str, Any]]:
            client = Rpc(settings)
            try:
                barrier.wait()
                return client.results(fn[0], fn[1], batch)
            finally:
                client.close()
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(run, range(2)))

    r1, r2 = both(("mosaic_create_rooms", "rooms"), items)
    assert all(r["ok"] for r in r1 + r2), [r for r in r1 + r2 if not r["ok"]][:3]
    assert [r["group_id"] for r in r1] == [r["group_id"] for r in r2]
    assert [a["created"] + b["created"] for a, b in zip(r1, r2, strict=True)] == [1] * len(pairs)
    assert_rooms_private(sql, cycle, pairs)

    notes = note_items(cycle, pairs, r1)
    n1, n2 = both(("mosaic_notify_matches", "notifications"), notes)
    assert all(r["ok"] for r in n1 + n2), [r for r in n1 + n2 if not r["ok"]][:3]
    # Exactly one of the two calls stored each notification, and says so.
    assert [a["sent"] + b["sent"] for a, b in zip(n1, n2, strict=True)] == [1] * len(notes)
    assert set(notes_per_user(sql, cycle, users).values()) == {1}


@pytest.mark.fault
@pytest.mark.stack_scripts
def test_nakama_killed_mid_batch_then_retry(sql: Sql, settings: Settings, cycle: str,
                                            nakama_stack: Service) -> None:
    """kill -9 of Nakama in the middle of a big batch, restart it with the project's stack
    code, retry: every pair one closed two-member room, every user exactly one
    notification.

    A batch takes well under a second on a warm Nakama, so a timed kill would often come
    too late. The kill is placed instead: a trigger makes PostgreSQL sleep on one row in
    the middle of the batch, and Nakama is killed while that statement sleeps.
    - rooms (500 pairs): the sleep is on pair 250's partner's membership row, inside the
      one statement that writes every new room of the call (mosaic_room_batch.lua), so
      the rooms exist all or none, never half (the room-by-room runtime path, where a
      kill left 249 rooms done and room 250 open, is what test_join_is_refused_while_the_
      room_is_still_open interrupts);
    - notifications (500 of them): the sleep is inside the single multi-row INSERT. The killed
      Nakama never answers, but PostgreSQL still commits the statement: the crash falls
      between "stored" and "reported", where the old claim design could lose or repeat.
    """
    users = bulk_users(sql, 1000)
    pairs = pairs_of(users)
    items = room_items(cycle, pairs)
    names = [room_name(cycle, i["pair_key"]) for i in items]

    def killed_during(rpc_id: str, field: str, batch: list[dict[str, str]],
                      ready: Any) -> None:
        outcome: list[object] = []

        def call() -> None:
            client = Rpc(settings)
            try:
                outcome.append(client.call(rpc_id, {field: batch}).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)
            finally:
                client.close()

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 20
        while not ready():
            assert time.monotonic() < deadline and caller.is_alive(), outcome
            time.sleep(0.05)
        pid = nakama_stack.pid()
        assert pid is not None, "Nakama's pid file names no live process"
        os.kill(pid, signal.SIGKILL)
        caller.join(30)
        assert not caller.is_alive() and outcome and outcome[0] != 200, outcome
        started = time.monotonic()
        nakama_stack.up()
        assert time.monotonic() - started < 30

    def sleeping() -> bool:
        return bool(sql.rows("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                             "AND query NOT LIKE '%pg_stat_activity%' LIMIT 1"))

    middle = pairs[249][1].user_id
    slow = Trigger(sql, "group_edge", f"NEW.destination_id = '{middle}'", sleep=6)
    try:
        killed_during("mosaic_create_rooms", "rooms", items, sleeping)
    finally:
        slow.drop()  # waits for the sleeping statement to end
    killed = groups_in_db(sql, names)
    assert len(killed) in (0, 500), len(killed)  # one transaction: all or none
    assert all(not g["open"] and g["edge_count"] == 2 for g in killed.values())
    rpc = Rpc(settings)
    try:
        rooms = rpc.rooms(items)
        assert all(r["ok"] for r in rooms), [r for r in rooms if not r["ok"]][:3]
        assert [r["created"] for r in rooms] == [not killed] * 500
        assert_rooms_private(sql, cycle, pairs)
        notes = note_items(cycle, pairs, rooms)
    finally:
        rpc.close()

    # 500 per call: 1000 notifications are ~350 KB, above Nakama's default
    # socket.max_request_size_bytes (256 KB).
    first, second = notes[:500], notes[500:]
    slow = Trigger(sql, "notification", f"NEW.user_id = '{users[250].user_id}'", sleep=4)
    try:
        killed_during("mosaic_notify_matches", "notifications", first, sleeping)
    finally:
        slow.drop()
    rpc = Rpc(settings)
    try:
        results = rpc.notify(first)
        later = rpc.notify(second)
    finally:
        rpc.close()
    assert all(r["ok"] and r["sent"] for r in later)
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]
    assert set(notes_per_user(sql, cycle, users).values()) == {1}
    # PostgreSQL committed the killed call's INSERT: the retry found every key stored.
    assert not any(r["sent"] for r in results)

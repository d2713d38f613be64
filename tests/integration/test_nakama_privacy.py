"""Who can see a match room, on the REAL local Nakama (nakama/modules/mosaic_privacy.lua).

A pair (alice, bob) gets a room through the server-to-server RPCs, as post-match does; a
third signed-in user (mallory) then tries every route that could show the room or its
members: the HTTP API's group listings, the group channel over HTTP and over the realtime
socket, and the console's endpoints without console credentials. The members themselves
must still see their room, its two members, join its channel and read its history (the web
client relies on exactly that), and may leave it; nobody may delete it or kick or ban the
partner.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from mosaic.settings import Settings
from stack.base import Service
from tests.integration.test_nakama_rooms import Player, Rpc, note_items, room_items

pytestmark = pytest.mark.integration


@pytest.fixture
def players(settings: Settings, nakama_stack: Service) -> Iterator[list[Player]]:
    made = [Player(settings) for _ in range(3)]
    yield made
    for p in made:
        p.close()


@pytest.fixture
def room(rpc: Rpc, players: list[Player], unique: str) -> dict[str, Any]:
    alice, bob, _ = players
    cycle = f"test-{unique}:20261207T110000Z"
    pairs = [(alice.user, bob.user)]
    made = rpc.rooms(room_items(cycle, pairs))[0]
    assert made["ok"], made
    assert all(r["ok"] for r in rpc.notify(note_items(cycle, pairs, [made])))
    return made


class Socket:
    """Nakama's realtime API (JSON over a websocket) with one user's session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.cid = 0

    def call(self, **message: Any) -> dict[str, Any]:
        self.cid += 1
        cid = str(self.cid)
        self.ws.send(json.dumps({"cid": cid, **message}))
        while True:
            reply = json.loads(self.ws.recv(timeout=10))
            if reply.get("cid") == cid:
                return dict(reply)


@contextmanager
def socket_of(settings: Settings, token: str) -> Iterator[Socket]:
    url = settings.nakama.url.replace("http", "ws", 1)
    with connect(f"{url}/ws?lang=en&status=false&token={token}", open_timeout=10) as ws:
        yield Socket(ws)


def _group_join(group_id: str) -> dict[str, Any]:
    return {"channel_join": {"target": group_id, "type": 3, "persistence": True,
                             "hidden": False}}


LIST_GROUP_FILTERS: list[dict[str, Any]] = [
    {"name": "mm-%"}, {"name": "MM-%"}, {"name": "__-%"}, {"name": "%"}, {"name": "m%"},
    {}, {"open": "false"}, {"open": "true"}, {"members": 2}, {"lang_tag": "en"},
    {"open": "false", "members": 2, "lang_tag": "en"},
]


def test_a_third_user_finds_no_room_by_any_http_route(room: dict[str, Any],
                                                      players: list[Player]) -> None:
    alice, bob, mallory = players
    gid = room["group_id"]
    secrets = (gid, alice.user.user_id, bob.user.user_id)
    for params in LIST_GROUP_FILTERS:  # ListGroups: any filter could reach closed groups
        listed = mallory.http.get("/v2/group", params={**params, "limit": 100})
        assert listed.status_code == 403, (params, listed.text[:300])
        assert not any(s in listed.text for s in secrets), params
    members = mallory.http.get(f"/v2/group/{gid}/user", params={"limit": 100})
    assert members.status_code == 403, members.text
    for who in (alice, bob):
        theirs = mallory.http.get(f"/v2/user/{who.user.user_id}/group", params={"limit": 100})
        assert theirs.status_code == 403, theirs.text
        assert gid not in theirs.text
    own = mallory.http.get(f"/v2/user/{mallory.user.user_id}/group")
    assert own.status_code == 200 and gid not in own.text, own.text
    history = mallory.http.get(f"/v2/channel/{room['channel_id']}", params={"limit": 10})
    assert history.status_code == 400 and "Group not found" in history.text, history.text


def test_a_third_user_cannot_join_the_room_channel_over_the_socket(
        room: dict[str, Any], players: list[Player], settings: Settings) -> None:
    _, _, mallory = players
    with socket_of(settings, mallory.session.token) as socket:
        reply = socket.call(**_group_join(room["group_id"]))
    assert "channel" not in reply and "error" in reply, reply


def test_the_console_shows_nothing_without_console_credentials(
        room: dict[str, Any], players: list[Player], settings: Settings) -> None:
    alice, _, mallory = players
    host = httpx.URL(settings.nakama.url).host
    console = f"http://{host}:{settings.nakama.console_port}"
    gid = room["group_id"]
    paths = ["/v2/console/group", f"/v2/console/group/{gid}", f"/v2/console/group/{gid}/member",
             f"/v2/console/account/{alice.user.user_id}/group", f"/v2/console/group/{gid}/export"]
    with httpx.Client(base_url=console, trust_env=False, timeout=10) as http:
        for path in paths:
            for headers in ({}, {"Authorization": f"Bearer {mallory.session.token}"}):
                got = http.get(path, headers=headers)
                assert got.status_code == 401, (path, got.status_code, got.text[:200])
                assert gid not in got.text and alice.user.user_id not in got.text


def test_members_see_their_room_its_members_and_its_chat(
        room: dict[str, Any], players: list[Player], settings: Settings) -> None:
    alice, bob, _ = players
    gid = room["group_id"]
    for me in (alice, bob):
        mine = me.http.get(f"/v2/user/{me.user.user_id}/group", params={"limit": 100})
        assert mine.status_code == 200, mine.text
        assert [g["group"]["id"] for g in mine.json()["user_groups"]] == [gid]
        members = me.http.get(f"/v2/group/{gid}/user", params={"limit": 100})
        assert members.status_code == 200, members.text
        ids = {m["user"]["id"] for m in members.json()["group_users"]}
        assert ids == {alice.user.user_id, bob.user.user_id}
    users = alice.http.get("/v2/user", params={"ids": bob.user.user_id})
    assert users.status_code == 200 and users.json()["users"][0]["id"] == bob.user.user_id
    text = f"hello {uuid.uuid4().hex[:6]}"
    with socket_of(settings, alice.session.token) as socket:
        joined = socket.call(**_group_join(gid))
        assert joined.get("channel", {}).get("id") == room["channel_id"], joined
        sent = socket.call(channel_message_send={"channel_id": room["channel_id"],
                                                 "content": json.dumps({"text": text})})
    assert "channel_message_ack" in sent, sent
    history = bob.http.get(f"/v2/channel/{room['channel_id']}", params={"limit": 10})
    assert history.status_code == 200, history.text
    assert any(text in m["content"] for m in history.json()["messages"])


def _states(player: Player, gid: str) -> dict[str, int]:
    got = player.http.get(f"/v2/group/{gid}/user")
    assert got.status_code == 200, got.text
    return {m["user"]["id"]: m["state"] for m in got.json()["group_users"]}


def test_members_may_leave_but_not_delete_or_remove_the_partner(
        room: dict[str, Any], players: list[Player]) -> None:
    alice, bob, mallory = players
    gid = room["group_id"]
    partner = {"user_ids": bob.user.user_id}
    before = _states(alice, gid)
    assert before == {alice.user.user_id: 0, bob.user.user_id: 2}
    for method, path, params in (("DELETE", f"/v2/group/{gid}", {}),
                                 ("POST", f"/v2/group/{gid}/kick", partner),
                                 ("POST", f"/v2/group/{gid}/ban", partner)):
        for who in (alice, bob, mallory):
            got = who.http.request(method, path, params=params)
            assert got.status_code == 403, (who.user.user_id, method, path, got.text)
    # Nakama 3.40 never installs a Lua DemoteGroupUsers hook; a demote changes nothing here
    # (Nakama demotes no one below member, nor the last superadmin).
    for who, target in ((alice, bob), (alice, alice), (bob, alice), (mallory, bob)):
        who.http.post(f"/v2/group/{gid}/demote", params={"user_ids": target.user.user_id})
    assert _states(bob, gid) == before
    # Leaving your own room is allowed, for the creator too (Nakama refuses the last
    # superadmin's leave; the partner is made superadmin first).
    left = alice.http.post(f"/v2/group/{gid}/leave")
    assert left.status_code == 200, left.text
    assert _states(bob, gid) == {bob.user.user_id: 0}
    gone = alice.http.get(f"/v2/user/{alice.user.user_id}/group").json()
    assert gid not in json.dumps(gone)
    assert alice.http.get(f"/v2/group/{gid}/user").status_code == 403

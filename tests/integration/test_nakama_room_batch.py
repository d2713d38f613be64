"""New match rooms written in one SQL statement (nakama/modules/mosaic_room_batch.lua) against
rooms written through Nakama's runtime (group_create, group_user_join, group_update), on the
REAL local Nakama and its PostgreSQL.

The same two signed-in users get one room per way, in two cycles. The runtime way is forced
by a trigger that refuses a match room inserted already closed (only the one statement does
that), so that call falls back to the runtime for its pair. Both rooms must then be the same
in Nakama's tables (groups, group_edge in both directions, the join message, the
mosaic_room_done record) and through the client API (the members' group lists, the member
list, the channel history), and behave the same when the members leave.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mosaic.settings import Settings
from stack.base import Service
from tests.integration.test_nakama_rooms import (
    Player,
    Rpc,
    Sql,
    Trigger,
    User,
    _in,
    assert_rooms_private,
    room_items,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def members(settings: Settings, nakama_stack: Service) -> Iterator[tuple[Player, Player]]:
    """Two signed-in users, ordered as a pair orders them (user_a first)."""
    made = sorted((Player(settings), Player(settings)), key=lambda p: p.user.custom_id)
    yield made[0], made[1]
    for p in made:
        p.close()


def _room_rows(sql: Sql, gid: str, a: User, b: User) -> dict[str, Any]:
    """Everything Nakama's tables hold for room ``gid``, with ids replaced by roles."""
    role = {gid: "group", a.user_id: "a", b.user_id: "b"}
    group = sql.rows(
        "SELECT creator_id, coalesce(description, '<null>'), coalesce(avatar_url, '<null>'), "
        "lang_tag, metadata::text, state, edge_count, max_count, disable_time::text "
        f"FROM groups WHERE id IN {_in([gid])}")
    assert len(group) == 1, group
    edges = sql.rows(
        "SELECT source_id, destination_id, state, position FROM group_edge "
        f"WHERE source_id IN {_in([gid])} OR destination_id IN {_in([gid])}")
    positions = {(role[s], role[d]): p for s, d, _, p in edges}
    messages = sql.rows(
        "SELECT code, sender_id, username = (SELECT username FROM users WHERE id = sender_id), "
        "stream_mode, stream_descriptor, stream_label, content::text, "
        "create_time = date_trunc('second', create_time) "
        f"FROM message WHERE stream_subject IN {_in([gid])}")
    done = sql.rows(f"SELECT name FROM mosaic_room_done WHERE group_id IN {_in([gid])}")
    return {
        "group": [role.get(v, v) for v in group[0]],
        "edges": sorted((role[s], role[d], st) for s, d, st, _ in edges),
        # Nakama writes each membership's two rows under one position.
        "same_position": positions[("group", "a")] == positions[("a", "group")]
        and positions[("group", "b")] == positions[("b", "group")],
        "messages": [[role.get(v, v) for v in m] for m in messages],
        "done": len(done),
    }


def _api_view(player: Player, gid: str, channel_id: str) -> dict[str, Any]:
    """What a member sees of room ``gid`` through the client API, ids replaced by roles."""
    listed = player.http.get(f"/v2/user/{player.user.user_id}/group", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    mine = [g for g in listed.json().get("user_groups", []) if g["group"]["id"] == gid]
    assert len(mine) == 1, listed.text
    group = mine[0]["group"]
    members = player.http.get(f"/v2/group/{gid}/user", params={"limit": 10})
    assert members.status_code == 200, members.text
    history = player.http.get(f"/v2/channel/{channel_id}", params={"limit": 10})
    assert history.status_code == 200, history.text
    return {
        "my_state": mine[0].get("state", 0),
        "group": {k: group.get(k) for k in ("edge_count", "max_count", "open", "lang_tag",
                                           "metadata", "description", "avatar_url")},
        "member_states": sorted(u.get("state", 0) for u in members.json()["group_users"]),
        "history": [(m.get("code"), m.get("content")) for m in history.json().get("messages", [])],
    }


def test_one_statement_rooms_match_what_the_runtime_writes(
        rpc: Rpc, sql: Sql, unique: str, members: tuple[Player, Player]) -> None:
    a, b = (p.user for p in members)
    me = {p.user.user_id: p for p in members}
    pairs = [(a, b)]
    runtime_cycle, batch_cycle = f"test-{unique}-rt:20261207T110000Z", \
        f"test-{unique}-one:20261207T110000Z"
    born_closed = Trigger(sql, "groups", "NEW.state = 1 AND NEW.metadata->>'kind' = "
                                         "'mosaic_match' AND NEW.creator_id = "
                                         f"'{a.user_id}'")
    try:
        by_runtime = rpc.rooms(room_items(runtime_cycle, pairs))[0]
    finally:
        born_closed.drop()
    by_batch = rpc.rooms(room_items(batch_cycle, pairs))[0]
    assert by_runtime["ok"] and by_runtime["created"], by_runtime
    assert by_batch["ok"] and by_batch["created"], by_batch
    assert_rooms_private(sql, runtime_cycle, pairs)
    assert_rooms_private(sql, batch_cycle, pairs)

    rows = [_room_rows(sql, r["group_id"], a, b) for r in (by_runtime, by_batch)]
    assert rows[0] == rows[1]
    assert rows[1]["group"][:1] == ["a"] and rows[1]["done"] == 1 and rows[1]["same_position"]
    assert rows[1]["edges"] == [("a", "group", "0"), ("b", "group", "2"),
                                ("group", "a", "0"), ("group", "b", "2")]
    assert [m[:2] for m in rows[1]["messages"]] == [["3", "b"]]  # b's "joined" entry

    for player in me.values():
        views = [_api_view(player, r["group_id"], r["channel_id"]) for r in (by_runtime, by_batch)]
        assert views[0] == views[1]
        assert views[1]["member_states"] == [0, 2] and views[1]["group"]["edge_count"] == 2

    # Leaving works alike: b leaves (edge_count 1), then a (the room is deleted), and a
    # replay of either cycle answers the recorded group id without re-creating it.
    for user in (b, a):
        for room in (by_runtime, by_batch):
            left = me[user.user_id].http.post(f"/v2/group/{room['group_id']}/leave")
            assert left.status_code == 200, left.text
        counts = sql.rows("SELECT count(*), coalesce(sum(edge_count), 0) FROM groups WHERE id IN "
                          f"{_in([by_runtime['group_id'], by_batch['group_id']])}")
        assert counts == ([["2", "2"]] if user == b else [["0", "0"]]), counts
    for cycle, room in ((runtime_cycle, by_runtime), (batch_cycle, by_batch)):
        again = rpc.rooms(room_items(cycle, pairs))[0]
        assert again["ok"] and not again["created"] and again["group_id"] == room["group_id"]

"""A retry finds the pair's room under the names it had before (issue 19): rooms created
before names were keyed (unkeyed name) or before a key rotation (a previous key's name) are
the pair's room, never a reason to create a second one. Real Nakama and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest
from pydantic import SecretStr

from mosaic.settings import Settings
from tests.integration.test_nakama_rooms import (
    Rpc,
    Sql,
    User,
    groups_in_db,
    make_users,
    pair_key,
    pairs_of,
    room_items,
    room_name,
)
from tests.support import second_nakama

pytestmark = pytest.mark.integration


def unkeyed_name(cycle: str, key: str) -> str:
    """The name mosaic_rooms.lua gave a pair before names were keyed."""
    return "mm-" + hashlib.sha256(f"{cycle}\n{key}".encode()).hexdigest()[:40]


def keyed_name(secret: str, cycle: str, key: str) -> str:
    mac = hmac.new(secret.encode(), f"{cycle}\n{key}".encode(), hashlib.sha256)
    return "mm-" + mac.hexdigest()[:40]


def _rename(sql: Sql, group_id: str, name: str) -> None:
    """What the room would look like had it been created under ``name``."""
    sql.rows(f"UPDATE groups SET name = '{name}' WHERE id = '{group_id}'")
    sql.rows(f"UPDATE mosaic_room_done SET name = '{name}' WHERE group_id = '{group_id}'")


def _members(sql: Sql, group_id: str) -> dict[str, str]:
    rows = sql.rows(f"SELECT destination_id, state FROM group_edge WHERE source_id = "
                    f"'{group_id}'")
    return dict((uid, state) for uid, state in rows)


def _assert_same_rooms(sql: Sql, first: list[dict[str, object]],
                       again: list[dict[str, object]], pairs: list[tuple[User, User]]) -> None:
    assert all(r["ok"] for r in again), again
    assert [r["group_id"] for r in again] == [r["group_id"] for r in first], \
        "a second room was created for a pair whose room exists under an older name"
    assert not any(r["created"] for r in again)
    for r, (a, b) in zip(first, pairs, strict=True):
        assert _members(sql, str(r["group_id"])) == {a.user_id: "0", b.user_id: "2"}


def test_a_room_created_before_names_were_keyed_is_found(
        rpc: Rpc, sql: Sql, settings: Settings, unique: str) -> None:
    cycle = f"legacy-{unique}:20261129T050000Z"
    pairs = pairs_of(make_users(settings, 4))
    items = room_items(cycle, pairs)
    first = rpc.rooms(items)
    assert all(r["ok"] and r["created"] for r in first), first
    for r, (a, b) in zip(first, pairs, strict=True):
        _rename(sql, str(r["group_id"]), unkeyed_name(cycle, pair_key(a, b)))

    again = rpc.rooms(items)
    _assert_same_rooms(sql, first, again, pairs)
    keyed = [room_name(cycle, pair_key(a, b)) for a, b in pairs]
    assert groups_in_db(sql, keyed) == {}, "a room was also created under the keyed name"


@pytest.mark.stack_scripts
def test_a_room_named_with_the_previous_key_is_found_after_a_rotation(
        rpc: Rpc, sql: Sql, settings: Settings, unique: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Rooms made by the stack's Nakama (its key), then a retry through a second Nakama
    whose key is new and lists the old one as previous; a new pair gets the new key."""
    cycle = f"rotate-{unique}:20261129T050000Z"
    users = make_users(settings, 6)
    pairs, fresh = pairs_of(users[:4]), pairs_of(users[4:])
    first = rpc.rooms(room_items(cycle, pairs))
    assert all(r["ok"] and r["created"] for r in first), first

    old, new = settings.nakama.room_name_key, secrets.token_hex(16)
    rotated = settings.nakama.model_copy(update={"room_name_key": SecretStr(new),
                                                 "room_name_previous_keys": [old]})
    with second_nakama(settings, tmp_path_factory.mktemp("rotated-nakama"),
                       nakama=rotated) as node:
        turned = Rpc(node)
        try:
            again = turned.rooms(room_items(cycle, pairs))
            _assert_same_rooms(sql, first, again, pairs)
            made = turned.rooms(room_items(cycle, fresh))
        finally:
            turned.close()
    new_names = [keyed_name(new, cycle, pair_key(a, b)) for a, b in pairs]
    assert groups_in_db(sql, new_names) == {}, "a room was also created under the new key"
    assert made[0]["ok"] and made[0]["created"], made
    (a, b), = fresh
    assert groups_in_db(sql, [keyed_name(new, cycle, pair_key(a, b))])

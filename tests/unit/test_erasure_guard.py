"""The embedding agent after ``mosaic users erase`` (on fakes): records naming an erased
user from before the erasure (a replay) are dropped with the outcome ``erased``; records
of other users, and requests after the erasure, are handled as always."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streams.events import SeekerUpdated
from tests.fakes import MemoryErasures
from tests.unit.test_embedding_agent import T0, Harness, block, opt_in, opt_out

pytestmark = pytest.mark.unit


def _erased(h: Harness, user: str, second: int) -> MemoryErasures:
    erasures = MemoryErasures()
    erasures.record(user, T0 + timedelta(seconds=second))
    h.pipeline.erasures = erasures
    return erasures


def test_a_replay_naming_an_erased_user_is_dropped() -> None:
    h = Harness("alice", "bob")
    _erased(h, "alice", 5)
    outcomes = h.run(opt_in("alice", 1), block("bob", "alice", 2), opt_out("alice", 3),
                     block("alice", "bob", 4), opt_in("bob", 5))
    assert outcomes == [("OptInRequested", "erased"), ("BlockRequested", "erased"),
                        ("OptOutRequested", "erased"), ("BlockRequested", "erased"),
                        ("OptInRequested", "indexed")]
    assert [e.key() for e in h.seekers.events] == ["bob"]
    assert h.index.fetch(["alice"]) == {} and h.blocks.blocked_by("bob") == set()


def test_a_request_after_the_erasure_is_handled() -> None:
    h = Harness("alice")
    _erased(h, "alice", 5)
    assert h.run(opt_in("alice", 5)) == [("OptInRequested", "erased")]  # same instant
    assert h.run(opt_in("alice", 6)) == [("OptInRequested", "indexed")]
    assert [type(e) for e in h.seekers.events] == [SeekerUpdated]

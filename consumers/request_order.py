"""The order of one user's opt-ins and opt-outs: the seekers records' ``version``.

This is the one place versions are made. Every other version is a copy: ``SeekerUpdated``
and ``SeekerRemoved`` carry it, the matcher's pool folds by it and copies it into
``PairMatched.version_a/_b``, ``SeekerUnmatched`` and its own removals, and every
user_state write of a later stage is ordered by it (mosaic/user_state.py ``stage_time``).

A request's time is the ingress host's clock (ms), and two hosts' clocks disagree: an
opt-out through a host that is behind could carry a lower time than the opt-in it cancels.
The log does not disagree: the opt-in topic is keyed by user, so one user's requests are
in one partition in the order they were accepted, and the embedding agent reads them in
that order. So the agent gives each request a hybrid logical clock's value,
``max(request time, the user's last version + 1)``: a later request on the log always has
a higher version, and the version stays the request time whenever the clocks agree.

Replays keep versions: the user's last ordered request is stored (partition, offset,
version, event id), and

- the same request again (same event id: the log read again, or a copy sent again) keeps
  its version;
- a record behind the last ordered one in the same partition was ordered before (the log
  read again from an older offset): it is ``stale`` and skipped, its outcome is on the
  topics already;
- a request older than the user's last version by more than ``stale_ms`` cannot be a new
  one (hosts' clocks and the ingress' delivery timeout are far closer): it is an old
  request sent again, e.g. a dead letter replayed after the user moved on, and is skipped
  as ``stale``, as the matcher ignored an older version before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mosaic.user_state import LastRequest
from streams.deadletter import RawRecord
from streams.events import OptInRequested, OptOutRequested, to_millis

Request = OptInRequested | OptOutRequested


class RequestVersions(Protocol):
    """Each user's last ordered request (mosaic.user_state.CassandraRequestVersions)."""

    def last(self, user_ids: Iterable[str]) -> dict[str, LastRequest]: ...

    def record(self, rows: Mapping[str, LastRequest]) -> None: ...


def request_millis(event: Request) -> int:
    """The request's own time: the ingress host's, in ms (the clock's lower bound)."""
    return max(1, to_millis(event.occurred_at))


def version_of(record: RawRecord, event: Request, last: LastRequest | None,
               stale_ms: int) -> int | None:
    """``event``'s version after the user's ``last`` ordered request; None: stale."""
    millis = request_millis(event)
    if last is None:
        return millis
    if event.event_id == last.event_id:
        return last.version
    if (record.partition == last.partition and record.offset <= last.offset
            and millis <= last.version):
        return None
    if millis + stale_ms < last.version:
        return None
    return max(millis, last.version + 1)


def order(requests: Sequence[tuple[RawRecord, Request]], last: Mapping[str, LastRequest],
          stale_ms: int) -> tuple[list[int | None], dict[str, LastRequest]]:
    """The version of each of ``requests`` (in log order; None: stale) and each user's
    new last request where it changed."""
    latest = dict(last)
    changed: dict[str, LastRequest] = {}
    versions: list[int | None] = []
    for record, event in requests:
        version = version_of(record, event, latest.get(event.user_id), stale_ms)
        versions.append(version)
        if version is None:
            continue
        now = LastRequest(record.partition, record.offset, version, event.event_id)
        if latest.get(event.user_id) != now:
            latest[event.user_id] = changed[event.user_id] = now
    return versions, changed

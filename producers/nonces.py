"""Nonces shared by every ingress instance: the ``ingress_nonces`` table. This module is its
one owner (the schema is a migration in ``mosaic/migrations.py``).

The per-process :class:`~producers.signing.NonceCache` forgets on a restart and knows
nothing of the other instances, so a captured signed request could be replayed there while
its timestamp is inside the window. A claim here is a lightweight transaction
(``INSERT ... IF NOT EXISTS``, Paxos at LOCAL_SERIAL): of any number of instances and
restarts, exactly one claim of a (nonce, timestamp) applies. A row lives twice the window:
a request is accepted while ``|now - timestamp| <= window``, so one claimed at the earliest
moment of its window still exists at the last moment any instance accepts it.
"""

from __future__ import annotations

from typing import Any, Protocol

from mosaic.cassandra import execute_async
from mosaic.migrations import require
from producers.errors import Unavailable

_CLAIM = ("INSERT INTO {keyspace}.ingress_nonces (nonce, signed_at) VALUES (?, ?) "
          "IF NOT EXISTS USING TTL ?")


class SharedNonces(Protocol):
    async def claim(self, timestamp: int, nonce: str) -> bool:
        """True if this call is the first use of the nonce anywhere (now single use)."""


class CassandraNonces:
    """:class:`SharedNonces` on ``<keyspace>.ingress_nonces``, asynchronous (the event loop
    awaits the driver's callback; no thread blocks)."""

    def __init__(self, session: Any, keyspace: str, *, window_seconds: int,
                 retry_after_seconds: float) -> None:
        require(session, keyspace)  # no DDL: fails clearly if not migrated
        self._session = session
        self._claim = session.prepare(_CLAIM.format(keyspace=keyspace))
        self._ttl = 2 * window_seconds
        self._retry_after = retry_after_seconds

    async def claim(self, timestamp: int, nonce: str) -> bool:
        try:
            rows = await execute_async(self._session, self._claim, (nonce, timestamp, self._ttl))
        except Exception as exc:
            # Fail closed: a timed-out claim may or may not have applied. The caller signs
            # its next attempt with a new nonce.
            raise Unavailable(f"nonce store unavailable: {type(exc).__name__}",
                              retry_after_seconds=self._retry_after) from exc
        return bool(rows[0][0])  # the [applied] column

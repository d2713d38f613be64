"""``mosaic users erase ID``: remove one user's personal data from every store.

The orchestration only: each store's owning module does its part (docs/security.md,
"Erasure"). In this order, so that a failure half-way leaves a state a second run
finishes (every step is idempotent):

1. ``erasures`` records the erasure (hashed id) first: from then on the embedding agent
   refuses any older opt-in topic record naming the user (a replay brings nobody back);
2. the vector index, the traits cache, user_state and the blocks lose the user's rows;
3. Nakama: the account and the post-match rows kept for it (group ids from the audit);
4. the audit rows naming the user are rewritten without them (after Nakama, which needs
   their group ids);
5. a null tombstone on the compacted seekers topic, last, so it follows any record the
   agent wrote before the erasure was recorded.

Prints one JSON line per store: ``{"store": ..., "removed": n, ...}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mosaic.settings import Settings

Report = dict[str, Any]


def register(subparsers: Any) -> None:
    users = subparsers.add_parser("users", help="act on one user's data")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    erase = sub.add_parser(
        "erase", help="remove a user's personal data from every store (idempotent)",
        description="Removes the user from the seekers topic (tombstone), the vector "
                    "index, the traits cache, user_state, the blocks, Nakama (account and "
                    "post-match rows) and the audit (rows rewritten without them); prints "
                    "one JSON line per store with what it removed.")
    erase.add_argument("user_id", metavar="ID", help="the user's id (Cognito sub)")
    erase.set_defaults(func=_erase)


def _erase(args: argparse.Namespace) -> int:
    erase_user(Settings(), args.user_id, emit=lambda r: print(json.dumps(r), flush=True))
    return 0


def erase_user(settings: Settings, user_id: str, *, session: Any = None,
               s3: Any = None, emit: Callable[[Report], None] = lambda _: None
               ) -> list[Report]:
    """Erase ``user_id`` everywhere; one report per store, in the order done, each also
    given to ``emit`` once done (a failure half-way shows how far it got)."""
    from mosaic.cassandra import connect
    from mosaic.s3 import s3_client
    from profiles.insights import check_user_id

    check_user_id(user_id)
    own = session is None
    session = session if session is not None else connect(settings.cassandra)
    try:
        reports = []
        for step in _steps(settings, user_id, session, s3 or s3_client(settings.s3)):
            reports.append(step())
            emit(reports[-1])
        return reports
    finally:
        if own:
            session.cluster.shutdown()


def _steps(settings: Settings, user: str, session: Any, s3: Any
           ) -> list[Callable[[], Report]]:
    from consumers.audit import CassandraAuditStore
    from consumers.blocks import CassandraBlockStore
    from mosaic.erasures import CassandraErasures
    from mosaic.user_state import forget_state
    from profiles.traits import S3TraitsCache

    audit = CassandraAuditStore(session)
    cache = S3TraitsCache(s3, settings.s3.traits_cache_bucket)
    keyspace = settings.cassandra.keyspace
    return [
        lambda: _report("erasures", 0, recorded=_record(CassandraErasures(session), user)),
        lambda: _report("vector_index", _forget_vector(settings, session, user)),
        lambda: _report("traits_cache", _forget_traits(cache, user)),
        lambda: _report("user_state", forget_state(session, keyspace, user)),
        lambda: _report("blocks", CassandraBlockStore(session).forget(user)),
        lambda: _nakama(settings, user, audit),
        lambda: _report("audit", audit.forget(user), kept="rows rewritten without the "
                        "user: pair key replaced, their id 'erased'"),
        lambda: _report("s3_insights", 0, owned=False, kept="written and owned by the "
                        "upstream analysis (docs/profiles.md): its owner erases them"),
        lambda: _report("seekers", 0, tombstones=_tombstone(settings, user)),
    ]


def _report(store: str, removed: int, **detail: Any) -> Report:
    return {"store": store, "removed": removed, **detail}


def _record(erasures: Any, user: str) -> int:
    erasures.record(user, datetime.now(UTC))
    return 1


def _forget_vector(settings: Settings, session: Any, user: str) -> int:
    from profiles.bootstrap import build_vector_index
    from profiles.embedders import LocalE5Embedder

    emb = settings.embedding
    dim = LocalE5Embedder.dim if emb.backend == "local" else emb.output_dimensionality
    index = build_vector_index(settings, dim=dim, session=session)
    found = len(index.fetch([user]))
    index.delete([user])
    return found


def _forget_traits(cache: Any, user: str) -> int:
    found = cache.get(user) is not None
    cache.invalidate(user)
    return int(found)


def _nakama(settings: Settings, user: str, audit: Any) -> Report:
    from consumers.chat import NakamaChat

    groups = sorted({r.nakama_group_id for r in audit.rows_of(user) if r.nakama_group_id})
    chat = NakamaChat(settings.nakama, parallel=1)
    try:
        counts = chat.erase_user(user, groups)
    finally:
        chat.close()
    return _report("nakama", sum(counts.values()), **counts)


def _tombstone(settings: Settings, user: str) -> int:
    from consumers.embedding.outputs import KafkaSeekerSink
    from streams.kafka import make_producer
    from streams.topics import build_catalog

    producer = make_producer(settings)
    return KafkaSeekerSink(producer, build_catalog(settings).seekers).tombstone([user])

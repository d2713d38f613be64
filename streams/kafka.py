"""Kafka clients with safe defaults, and producing an event with delivery confirmation.

Producers are idempotent (``acks=all``); transactional producers add a
``transactional.id`` so a restarted instance fences its zombie. Consumers read only
committed records and never auto-commit: offsets are committed after the work is done
(or sent with a transaction). Failures raise :mod:`mosaic.errors` types.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from mosaic.errors import ConfigError, ExternalServiceError
from mosaic.settings import Settings
from streams.events import Event
from streams.serde import AvroSerde, default_serde
from streams.topics import Topic

# librdkafka's own log lines go through Python logging (mosaic.ops.logs quiets the
# harmless ones outside debug) instead of straight to stderr.
RDKAFKA_LOG = logging.getLogger("librdkafka")
log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0


class KafkaOperationError(ExternalServiceError):
    """A Kafka call failed. ``fatal`` means the client is unusable and must be rebuilt
    (e.g. a transactional producer fenced by a newer instance)."""

    def __init__(self, message: str, *, retryable: bool, fatal: bool = False,
                 code: str | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.fatal = fatal
        self.code = code  # librdkafka's error name, e.g. "_FENCED"

    @property
    def fenced(self) -> bool:
        """The producer's epoch is stale: a newer instance with its transactional.id
        started, or the coordinator aborted a transaction that outlived
        ``transaction.timeout.ms`` (librdkafka reports both as ``_FENCED``)."""
        return self.code in _FENCED


@dataclass(frozen=True)
class Delivered:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


# Leadership/metadata hiccups (e.g. right after topic creation) that librdkafka does not
# always flag as retriable on admin-style calls.
_TRANSIENT = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    # A request in flight to a broker that died (kill -9 of one node of a cluster).
    KafkaError._DESTROY_BROKER, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    # Right after a leader change (a broker of a cluster killed) the new leader answers
    # these until its high watermark and leader epoch have caught up.
    KafkaError.OFFSET_NOT_AVAILABLE, KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
})
_FENCED = frozenset({"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"})
# A commit that failed with a retriable error may still have reached the coordinator, so
# it is retried (librdkafka's contract), never aborted: a transaction's outcome is decided
# once. Past these attempts the outcome is unknown and the producer must be rebuilt
# (init_transactions settles the open transaction) before anyone looks at the log.
COMMIT_ATTEMPTS = 3


# Delivery-report errors worth producing again: librdkafka never flags a delivery report
# retriable(), so they are classified by code. After a broker restart the usual ones are a
# message timeout and the idempotence state the broker lost (sequence, producer id).
_DELIVERY_TRANSIENT = _TRANSIENT | frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT_QUEUE, KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION, KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError._WAIT_COORD, KafkaError._NODE_UPDATE,
})


def delivery_retryable(error: KafkaError) -> bool:
    """A failed delivery that producing again can fix (not: too large, not authorized, a
    fatal producer, a topic that does not exist)."""
    if error.fatal():
        return False
    return error.retriable() or error.code() in _DELIVERY_TRANSIENT


def wrap_kafka_error(what: str, exc: BaseException) -> KafkaOperationError:
    """A :class:`KafkaOperationError` for a ``KafkaException`` (keeps retriable/fatal)."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is None:
        return KafkaOperationError(f"{what}: {exc}", retryable=False)
    return KafkaOperationError(
        f"{what}: {error.name()}: {error.str()}",
        retryable=error.retriable() or error.txn_requires_abort() or error.code() in _TRANSIENT,
        fatal=error.fatal(), code=error.name(),
    )


# -- configuration -------------------------------------------------------------------


def security_config(settings: Settings) -> dict[str, Any]:
    """TLS / SASL settings for librdkafka (empty for the local plaintext stack)."""
    k = settings.kafka
    config: dict[str, Any] = {}
    if k.security_protocol != "PLAINTEXT":
        config["security.protocol"] = k.security_protocol
    if k.security_protocol.startswith("SASL_"):
        if k.sasl_mechanism is None or not k.sasl_username:
            raise ConfigError(f"kafka.security_protocol={k.security_protocol} needs "
                              "kafka.sasl_mechanism and kafka.sasl_username")
        config.update({"sasl.mechanism": k.sasl_mechanism, "sasl.username": k.sasl_username,
                       "sasl.password": k.sasl_password.get_secret_value()})
    if k.security_protocol.endswith("SSL"):
        for key, path in (("ssl.ca.location", k.ssl_ca_location),
                          ("ssl.certificate.location", k.ssl_certificate_location),
                          ("ssl.key.location", k.ssl_key_location)):
            if path is not None:
                config[key] = str(path)
        if k.ssl_key_password.get_secret_value():
            config["ssl.key.password"] = k.ssl_key_password.get_secret_value()
    return config


def faust_credentials(settings: Settings) -> Any:
    """The same TLS / SASL settings for faust's aiokafka driver (None when plaintext)."""
    import ssl

    import faust

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = None
    if k.security_protocol.endswith("SSL"):
        context = ssl.create_default_context(
            cafile=str(k.ssl_ca_location) if k.ssl_ca_location else None)
        if k.ssl_certificate_location is not None:
            context.load_cert_chain(
                str(k.ssl_certificate_location),
                str(k.ssl_key_location) if k.ssl_key_location else None,
                k.ssl_key_password.get_secret_value() or None)
    if k.security_protocol.startswith("SASL_"):
        security_config(settings)  # same completeness checks
        return faust.SASLCredentials(username=k.sasl_username,
                                     password=k.sasl_password.get_secret_value(),
                                     mechanism=k.sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context)


def producer_config(settings: Settings, overrides: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "delivery.timeout.ms": 60_000,
        # Same key -> same partition as Java/aiokafka clients (librdkafka defaults to crc32).
        "partitioner": "murmur2_random",
        "logger": RDKAFKA_LOG,
        "error_cb": log_client_errors("producer"),
        **security_config(settings),
    }
    config.update(overrides or {})
    return config


def group_id(settings: Settings, name: str) -> str:
    """The consumer group of agent ``name`` in this deployment (``mosaic.agent.rooms``): it
    carries the topic prefix, so stacks, tests and benchmarks sharing a broker never share
    a group."""
    return f"{settings.kafka.topic_prefix}agent.{name}"


def log_client_errors(client: str, every_seconds: float = 30.0) -> Any:
    """An ``error_cb`` that says what the client sees (brokers down, a fatal error) instead
    of librdkafka retrying in silence; a repeated error (a reconnect every 100 ms while a
    broker is down) once per ``every_seconds`` with how many times it recurred."""
    last: dict[int, tuple[float, int]] = {}  # code -> (when logged, repeats since)

    def error_cb(error: KafkaError) -> None:
        now = time.monotonic()
        logged_at, repeats = last.get(error.code(), (-every_seconds, 0))
        if not error.fatal() and now - logged_at < every_seconds:
            last[error.code()] = (logged_at, repeats + 1)
            return
        last[error.code()] = (now, 0)
        level = logging.ERROR if error.fatal() else logging.WARNING
        again = f" ({repeats} more since the last report)" if repeats else ""
        log.log(level, "%s: kafka client error %s: %s%s", client, error.name(), error.str(),
                again)

    return error_cb


def _log_partitions(group: str, what: str, level: int) -> Any:
    def callback(_consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        log.log(level, "%s: %s %s", group, what, partition_names(partitions))

    return callback


def partition_names(partitions: Iterable[KafkaTopicPartition]) -> str:
    """``topic[0,2,5]`` per topic: how logs name partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t}[{','.join(map(str, sorted(ps)))}]"
                     for t, ps in sorted(by_topic.items())) or "no partitions"


def consumer_config(settings: Settings, group_id: str,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if not group_id:
        raise ConfigError("a consumer needs a group id")
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": RDKAFKA_LOG,
        "error_cb": log_client_errors(group_id),
        **security_config(settings),
    }
    config.update(overrides or {})
    return config


# -- factories -------------------------------------------------------------------------


def make_producer(settings: Settings, overrides: Mapping[str, Any] | None = None) -> Producer:
    """An idempotent producer (``acks=all``, ``enable.idempotence``)."""
    return Producer(producer_config(settings, overrides))


def make_transactional_producer(
    settings: Settings,
    transactional_id: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    transaction_timeout_seconds: float = 60.0,
    init: bool = True,
) -> Producer:
    """A producer with ``transactional.id``, initialised (:func:`init_transactions`) unless
    ``init`` is false. Use it with :func:`transaction`. The coordinator aborts a
    transaction open longer than ``transaction_timeout_seconds``."""
    if not transactional_id:
        raise ConfigError("a transactional producer needs a transactional.id")
    txn_ms = int(transaction_timeout_seconds * 1000)
    # librdkafka requires message.timeout.ms <= transaction.timeout.ms.
    config = {"transactional.id": transactional_id, "transaction.timeout.ms": txn_ms,
              "delivery.timeout.ms": min(60_000, txn_ms)}
    producer = Producer(producer_config(settings, {**config, **(overrides or {})}))
    if init:
        init_transactions(producer, transactional_id, timeout_seconds)
    return producer


def init_transactions(producer: Producer, transactional_id: str,
                      timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Fence every older producer of ``transactional_id`` and wait until their open
    transaction is settled (committed or aborted). One that times out goes on in the
    background: call this again on the SAME producer (it resumes). A new producer made
    instead would be fenced by this one once the broker answers it."""
    try:
        producer.init_transactions(timeout_seconds)
    except KafkaException as exc:
        raise wrap_kafka_error(f"init_transactions({transactional_id})", exc) from exc


def make_consumer(
    settings: Settings,
    group_id: str,
    topics: Sequence[str | Topic] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Consumer:
    """A read_committed consumer without auto-commit, subscribed to ``topics`` if given;
    assignments, revocations and a lost assignment are logged with the group's name."""
    consumer = Consumer(consumer_config(settings, group_id, overrides))
    if topics:
        consumer.subscribe([t.name if isinstance(t, Topic) else t for t in topics],
                           on_assign=_log_partitions(group_id, "assigned", logging.INFO),
                           on_revoke=_log_partitions(group_id, "revoked", logging.INFO),
                           on_lost=_log_partitions(group_id, "LOST (the group moved on "
                                                   "without it)", logging.WARNING))
    return consumer


def make_admin(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers,
                              "logger": RDKAFKA_LOG, **security_config(settings)}
    return AdminClient(config)


# -- producing -------------------------------------------------------------------------


def _topic_name(topic: str | Topic, event: Event) -> str:
    if isinstance(topic, Topic):
        if not topic.carries(event):
            raise ConfigError(f"topic {topic.name} does not carry {event.schema_name}")
        return topic.name
    return topic


@dataclass(frozen=True)
class Encoded:
    """An event encoded for its topic, ready to produce: encoding before a transaction
    begins keeps the transaction as short as the produce itself."""

    topic: str
    key: str | bytes | None
    value: bytes


def encode_event(topic: str | Topic, event: Event, *, key: str | bytes | None = None,
                 serde: AvroSerde | None = None) -> Encoded:
    """``event`` encoded for ``topic`` (key defaults to ``event.key()``)."""
    return Encoded(_topic_name(topic, event), event.key() if key is None else key,
                   (serde or default_serde()).encode(event))


def produce_event(
    producer: Producer,
    topic: str | Topic,
    event: Event,
    *,
    key: str | bytes | None = None,
    serde: AvroSerde | None = None,
    on_delivery: Any = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Queue an encoded event (key defaults to ``event.key()``); does not wait.

    Inside a transaction the commit confirms delivery; elsewhere use
    :func:`produce_and_wait` or ``producer.flush()``.
    """
    produce_encoded(producer, encode_event(topic, event, key=key, serde=serde),
                    on_delivery=on_delivery, timeout_seconds=timeout_seconds)


def produce_encoded(producer: Producer, record: Encoded, *, on_delivery: Any = None,
                    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Queue an :class:`Encoded` record; does not wait (see :func:`produce_event`)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            producer.produce(record.topic, value=record.value, key=record.key,
                             on_delivery=on_delivery)
            return
        except BufferError as exc:
            # Local queue full: serve delivery reports to make room, then retry.
            if time.monotonic() > deadline:
                raise KafkaOperationError(f"produce to {record.topic}: queue full",
                                          retryable=True) from exc
            producer.poll(0.1)
        except KafkaException as exc:
            raise wrap_kafka_error(f"produce to {record.topic}", exc) from exc


def produce_and_wait(
    producer: Producer,
    topic: str | Topic,
    event: Event,
    *,
    key: str | bytes | None = None,
    serde: AvroSerde | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> Delivered:
    """Produce one event and block until the broker acknowledged it (or raise)."""
    outcome: list[tuple[KafkaError | None, Message | None]] = []

    def on_delivery(error: KafkaError | None, message: Message | None) -> None:
        outcome.append((error, message))

    produce_event(producer, topic, event, key=key, serde=serde, on_delivery=on_delivery,
                  timeout_seconds=timeout_seconds)
    deadline = time.monotonic() + timeout_seconds
    while not outcome:
        if time.monotonic() > deadline:
            raise KafkaOperationError(
                f"no delivery report for {event.schema_name} after {timeout_seconds:.0f}s",
                retryable=True,
            )
        producer.poll(0.1)
    error, message = outcome[0]
    if error is not None or message is None:
        raise KafkaOperationError(
            f"delivery of {event.schema_name} failed: {error}",
            retryable=bool(error and delivery_retryable(error)),
            fatal=bool(error and error.fatal()),
        )
    return Delivered(message.topic() or "", message.partition() or 0, message.offset() or 0)


# -- transactions ----------------------------------------------------------------------


@contextmanager
def transaction(producer: Producer, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                before_commit: Callable[[], None] | None = None) -> Iterator[Producer]:
    """Begin a transaction; commit when the block ends, abort if it raises.

    A commit that failed retriably is committed again (up to ``COMMIT_ATTEMPTS``); one
    that needs an abort is aborted and raised as a retryable :class:`KafkaOperationError`;
    ``fatal=True`` means rebuild the producer (fenced, or the commit's outcome unknown).
    ``before_commit`` is a test hook, called right before the commit request (a test
    pauses the broker there, so the commit itself times out).
    """
    try:
        producer.begin_transaction()
    except KafkaException as exc:
        raise wrap_kafka_error("begin_transaction", exc) from exc
    try:
        yield producer
    except KafkaOperationError as exc:
        if not exc.fatal:  # a fatal producer cannot abort; its owner rebuilds it
            _abort(producer, timeout_seconds)
        raise
    except BaseException:
        _abort(producer, timeout_seconds)
        raise
    if before_commit is not None:
        before_commit()
    _commit(producer, timeout_seconds)


def _commit(producer: Producer, timeout_seconds: float) -> None:
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            producer.commit_transaction(timeout_seconds)
            return
        except KafkaException as exc:
            error = wrap_kafka_error("commit_transaction", exc)
            raw = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error.fatal:
                raise error from exc
            if raw is None or raw.txn_requires_abort() or not raw.retriable():
                _abort(producer, timeout_seconds)
                raise error from exc
            if attempt == COMMIT_ATTEMPTS:
                raise KafkaOperationError(
                    f"{error}: outcome unknown after {attempt} commit attempts",
                    retryable=True, fatal=True, code=error.code) from exc
            log.warning("%s; committing again (attempt %d)", error, attempt + 1)


def _abort(producer: Producer, timeout_seconds: float) -> None:
    try:
        producer.abort_transaction(timeout_seconds)
    except KafkaException as exc:
        # A fenced/fatal producer cannot abort; the broker aborts on its timeout.
        raise wrap_kafka_error("abort_transaction", exc) from exc


# librdkafka 2.16 can block in send_offsets_to_transaction far past its timeout after a
# broker restart: its group-coordinator request is never timed out (confluentinc/
# librdkafka#5456, #5511; measured on a private broker: still blocked after 60 s with a
# 10 s timeout, in each of the 4 restarts tried). The call therefore runs aside and is
# given up after its timeout plus this grace; the producer is then unusable (``fatal``): its owner
# rebuilds it, and the new producer's init_transactions settles the open transaction.
STUCK_GRACE_SECONDS = 10.0


def send_offsets(
    producer: Producer,
    consumer: Consumer,
    messages: Iterable[Message],
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Commit the consumer's progress past ``messages`` as part of the open transaction
    (bounded: see ``STUCK_GRACE_SECONDS``)."""
    offsets = next_offsets(messages)
    metadata = consumer.consumer_group_metadata()
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, metadata, timeout_seconds)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True, name="send-offsets")
    worker.start()
    worker.join(timeout_seconds + STUCK_GRACE_SECONDS)
    if not outcome:
        raise KafkaOperationError(
            f"send_offsets_to_transaction did not return within {timeout_seconds:.0f} s "
            f"+ {STUCK_GRACE_SECONDS:.0f} s (librdkafka's coordinator request after a "
            "broker restart); the producer must be rebuilt", retryable=True, fatal=True,
            code="_STUCK")
    error = outcome[0]
    if isinstance(error, KafkaException):
        raise wrap_kafka_error("send_offsets_to_transaction", error) from error
    if error is not None:
        raise error


def next_offsets(messages: Iterable[Message]) -> list[KafkaTopicPartition]:
    """For each partition, the offset after the last of ``messages`` (what to commit)."""
    latest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            continue
        latest[(topic, partition)] = max(latest.get((topic, partition), -1), offset)
    return [KafkaTopicPartition(t, p, o + 1) for (t, p), o in sorted(latest.items())]


def commit(consumer: Consumer, messages: Iterable[Message]) -> None:
    """Synchronously commit past ``messages`` (non-transactional consumers)."""
    offsets = next_offsets(messages)
    if not offsets:
        return
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise wrap_kafka_error("commit", exc) from exc


# -- reading a topic to its end --------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Every committed record of a topic up to ``end_offsets`` (partition -> offset)."""

    messages: list[Message]
    end_offsets: dict[int, int]


def read_to_end(consumer: Consumer, topic: str | Topic, *,
                timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Snapshot:
    """Read all partitions of ``topic`` from the beginning up to the end offsets taken
    at the call (e.g. the matcher's pool snapshot of ``seekers``). Uses manual
    assignment, so the consumer's group offsets are neither used nor changed."""
    name = topic.name if isinstance(topic, Topic) else topic
    deadline = time.monotonic() + timeout_seconds
    ends = {p: high for p, (_, high) in
            watermarks(consumer, name, timeout_seconds, what="end offsets").items()}
    consumer.assign([KafkaTopicPartition(name, p, OFFSET_BEGINNING) for p in ends])
    messages: list[Message] = []
    try:
        while not _caught_up(consumer, name, ends):
            if time.monotonic() > deadline:
                raise KafkaOperationError(f"reading {name} to {ends} timed out "
                                          "(an open transaction?)", retryable=True)
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaOperationError(f"reading {name}: {error.str()}",
                                          retryable=error.retriable(), fatal=error.fatal())
            if error is None and (message.offset() or 0) < ends[message.partition() or 0]:
                messages.append(message)
    finally:
        consumer.unassign()
    return Snapshot(messages, ends)


def watermarks(consumer: Consumer, name: str, timeout_seconds: float, *,
               what: str = "watermarks") -> dict[int, tuple[int, int]]:
    """Per partition of topic ``name``, its (low, high) watermarks from the broker (not
    the cache); retries retryable failures until ``timeout_seconds`` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            metadata = consumer.list_topics(name, timeout_seconds).topics[name]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            return {p: consumer.get_watermark_offsets(KafkaTopicPartition(name, p),
                                                      timeout_seconds, cached=False)
                    for p in sorted(metadata.partitions)}
        except KafkaException as exc:
            error = wrap_kafka_error(f"{what} of {name}", exc)
            # A just-created topic answers "not leader" for a moment.
            if not error.retryable or time.monotonic() > deadline:
                raise error from exc
            time.sleep(0.2)


def _caught_up(consumer: Consumer, name: str, ends: Mapping[int, int]) -> bool:
    positions = consumer.position([KafkaTopicPartition(name, p) for p in ends])
    # A position of OFFSET_INVALID (<0) means nothing fetched yet: fine only if empty.
    return all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0
               for tp in positions)


class BatchPublisher:
    """Queues many events without waiting, then confirms them all with one ``flush``:
    a consumer that commits only after :meth:`confirm` returns never commits past a
    record whose output the broker does not have."""

    def __init__(self, producer: Producer, *, serde: AvroSerde | None = None) -> None:
        self.producer = producer
        self._serde = serde or default_serde()
        self._failed: list[KafkaError] = []

    def _on_delivery(self, error: KafkaError | None, _message: Message | None) -> None:
        if error is not None:
            self._failed.append(error)

    def publish(self, topic: str | Topic, event: Event) -> None:
        produce_event(self.producer, topic, event, serde=self._serde,
                      on_delivery=self._on_delivery)

    def confirm(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Block until every queued event is acknowledged; raise if any was not."""
        left = self.producer.flush(timeout_seconds)
        failed, self._failed = self._failed, []
        if left:
            raise KafkaOperationError(f"{left} events not acknowledged after "
                                      f"{timeout_seconds:.0f}s", retryable=True)
        if failed:
            raise KafkaOperationError(
                f"{len(failed)} events not delivered: {failed[0]}",
                retryable=all(delivery_retryable(e) for e in failed),
                fatal=any(e.fatal() for e in failed))

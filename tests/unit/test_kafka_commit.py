"""How :func:`streams.kafka.transaction` settles a commit that failed: retriable errors are
committed again (the first request may have reached the coordinator, so an abort could
contradict it), abortable ones are aborted, and an outcome that stays unknown asks for a
new producer."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.kafka import COMMIT_ATTEMPTS, KafkaOperationError, transaction

pytestmark = pytest.mark.unit


class ScriptedProducer:
    """Answers commit_transaction from a script of errors (None = success)."""

    def __init__(self, *commits: KafkaError | None) -> None:
        self.commits = list(commits)
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")
        error = self.commits.pop(0)
        if error is not None:
            raise KafkaException(error)

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")


def timed_out() -> KafkaError:
    return KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True)


def test_a_retriable_commit_error_is_committed_again_never_aborted() -> None:
    producer = ScriptedProducer(timed_out(), None)
    with transaction(producer):  # type: ignore[arg-type]
        pass
    assert producer.calls == ["begin", "commit", "commit"]


def test_an_abortable_commit_error_aborts_and_is_retryable() -> None:
    producer = ScriptedProducer(KafkaError(KafkaError.INVALID_TXN_STATE, "x",
                                           txn_requires_abort=True))
    with pytest.raises(KafkaOperationError) as raised, \
            transaction(producer):  # type: ignore[arg-type]
        pass
    assert producer.calls == ["begin", "commit", "abort"]
    assert raised.value.retryable and not raised.value.fatal


def test_an_outcome_still_unknown_asks_for_a_new_producer_without_aborting() -> None:
    producer = ScriptedProducer(*[timed_out() for _ in range(COMMIT_ATTEMPTS)])
    with pytest.raises(KafkaOperationError, match="outcome unknown") as raised, \
            transaction(producer):  # type: ignore[arg-type]
        pass
    assert "abort" not in producer.calls
    assert raised.value.fatal and not raised.value.fenced


def test_a_fenced_commit_is_fatal_and_named_fenced() -> None:
    producer = ScriptedProducer(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(KafkaOperationError) as raised, \
            transaction(producer):  # type: ignore[arg-type]
        pass
    assert raised.value.fatal and raised.value.fenced
    assert "abort" not in producer.calls

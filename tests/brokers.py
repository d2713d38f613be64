"""A private single Kafka broker for fault tests: its own ports and data dir under /tmp, so
restarts, kill -9 and SIGSTOP pauses never touch the shared stack's broker (others' tests
run on it). Started by the caller, stopped and deleted by :meth:`PrivateBroker.close`."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mosaic.settings import Settings
from stack.base import pid_alive, port_open
from stack.kafka import Kafka
from tests.support import free_ports

FAULTS = ("restart", "kill9", "pause")


class PrivateBroker:
    """One KRaft node on ``port`` (controller ``port + 1``)."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.data = Path(f"/tmp/mosaic-broker-{port}-{uuid.uuid4().hex[:6]}")
        self.settings = settings.model_copy(update={
            "stack": settings.stack.model_copy(update={"data_dir": self.data}),
            "kafka": settings.kafka.model_copy(update={
                "bootstrap_servers": f"127.0.0.1:{port}", "controller_port": port + 1,
                "brokers": 1, "replication_factor": 1, "min_insync_replicas": None}),
        })
        self.service = Kafka(self.settings)

    def up(self) -> None:
        self.service.up()

    def close(self) -> None:
        self.service.down(wipe=True)
        shutil.rmtree(self.data, ignore_errors=True)

    def _pid(self) -> int:
        pid = self.service.pid()
        assert pid is not None, f"private broker {self.service.where()} is not running"
        return pid

    def fault(self, kind: str, pause_seconds: float = 60.0) -> None:
        """``restart`` (SIGTERM, start again), ``kill9`` (SIGKILL, start again) or
        ``pause`` (SIGSTOP for ``pause_seconds``, then SIGCONT)."""
        if kind == "restart":
            self.service.down()
        elif kind == "kill9":
            pid = self._pid()
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while pid_alive(pid):
                assert time.monotonic() < deadline, f"broker pid {pid} survived SIGKILL"
                time.sleep(0.1)
        elif kind == "pause":
            pid = self._pid()
            os.killpg(os.getpgid(pid), signal.SIGSTOP)
            try:
                time.sleep(pause_seconds)
            finally:
                os.killpg(os.getpgid(pid), signal.SIGCONT)
            return
        else:
            raise ValueError(f"unknown broker fault {kind!r}; one of {FAULTS}")
        self.service.up()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP while the block runs, SIGCONT after (also on failure)."""
        pgid = os.getpgid(self._pid())
        os.killpg(pgid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(pgid, signal.SIGCONT)


@contextmanager
def private_broker(settings: Settings, port: int | None = None) -> Iterator[PrivateBroker]:
    """A started private broker on ``port`` (default: a free pair); skips the test when a
    given port is taken."""
    port = port or free_ports((0, 1), step=2)
    if any(port_open("127.0.0.1", p) for p in (port, port + 1)):
        pytest.skip(f"the private broker's ports {port}/{port + 1} are in use")
    broker = PrivateBroker(settings, port)
    try:
        broker.up()
        yield broker
    finally:
        broker.close()

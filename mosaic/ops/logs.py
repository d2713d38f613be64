"""Logging for every ``mosaic`` command: level, text or JSON lines, no secrets, no noise.

- ``MOSAIC_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR) sets the level; ``mosaic -v`` is DEBUG.
- ``MOSAIC_LOG_FORMAT=json`` writes one JSON object per line: ``ts``, ``level``,
  ``logger``, ``message``, plus the context fields a call passes with ``extra=``
  (:data:`CONTEXT_FIELDS`: cycle id, pair key, user id, topic, partition, offset...)
  and ``exc`` for a traceback.
- Every configured secret value (the settings' ``SecretStr`` fields) and ``key=value``
  credentials in URLs are masked in every line, whatever logger wrote it.
- Third-party chatter that looks like failure but is not (librdkafka's idempotence PID
  and background-queue notices, aiokafka's "GroupCoordinatorNotAvailable" while a group
  coordinator starts) is dropped below DEBUG and kept when debugging.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("cycle_id", "pair_key", "user_id", "topic", "partition", "offset", "pool",
                  "agent", "group", "event_id", "service")
MASK = "***"
# key=value credentials in URLs and messages (Nakama's http_key in query strings...).
_CREDENTIAL = re.compile(
    r"(?i)\b((?:http|server|api|hmac|signing|encryption)_key|password|passwd|secret|token|"
    r"signature|authorization)([=:]\s*)(?!\*\*\*)([^\s&\"',;]+)")
# Known harmless-but-alarming third-party lines (kept at DEBUG).
NOISE = (
    ("librdkafka", re.compile(r"GETPID|BGQUEUE|Purging \d+ unserved events|"
                              r"Coordinator load in progress|COORDINATOR_LOAD_IN_PROGRESS")),
    ("aiokafka", re.compile(r"GroupCoordinatorNotAvailable|NotCoordinatorForGroup|"
                            r"CoordinatorLoadInProgress|CoordinatorNotAvailable")),
)
QUIET_LOGGERS = {"httpx": logging.WARNING, "faust": logging.WARNING, "mode": logging.WARNING,
                 "aiokafka": logging.WARNING, "cassandra": logging.WARNING,
                 "librdkafka": logging.INFO, "botocore": logging.WARNING,
                 "urllib3": logging.WARNING, "uvicorn.access": logging.WARNING}


def secret_values(settings: Any) -> list[str]:
    """Every non-trivial SecretStr value in a settings tree (a pydantic model)."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            if len(text) >= 6:
                found.append(text)
        elif isinstance(value, BaseModel):
            found.extend(secret_values(value))
    return sorted(set(found), key=len, reverse=True)


class Redactor(logging.Filter):
    """Masks secret values and ``key=value`` credentials in the rendered message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class NoiseFilter(logging.Filter):
    """Drops the :data:`NOISE` lines unless the handler shows DEBUG."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if self._debug:
            return True
        for prefix, pattern in NOISE:
            if record.name.startswith(prefix) and pattern.search(record.getMessage()):
                return False
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            exc = self.formatException(record.exc_info)
            entry["exc"] = self._redactor.redact(exc) if self._redactor else exc
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the context fields a call passed appended as ``k=v``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS
                   if getattr(record, n, None) is not None]
        return f"{line} [{' '.join(context)}]" if context else line


def configure_logging(*, level: str = "INFO", fmt: str = "text", verbose: bool = False,
                      secrets: Iterable[str] = (), stream: Any = None) -> logging.Handler:
    """Replace the root handlers with one configured handler; returns it."""
    debug = verbose or level.upper() == "DEBUG"
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter())
    handler.addFilter(NoiseFilter(debug))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    for name, quiet in QUIET_LOGGERS.items():
        # httpx logs request URLs (Nakama's http_key) at INFO: never below WARNING.
        logging.getLogger(name).setLevel(quiet if not debug or name == "httpx"
                                         else logging.DEBUG)
    logging.captureWarnings(True)
    return handler


def configure_from_settings(verbose: bool = False) -> logging.Handler:
    """``configure_logging`` from ``MOSAIC_LOG_LEVEL`` / ``MOSAIC_LOG_FORMAT``; falls back
    to the defaults when the settings cannot load (the command then reports why)."""
    try:
        from mosaic.settings import Settings

        settings = Settings()
    except Exception:  # noqa: BLE001 - logging must come up to report the settings error
        return configure_logging(verbose=verbose)
    return configure_logging(level=settings.log_level, fmt=settings.log_format,
                             verbose=verbose, secrets=secret_values(settings))

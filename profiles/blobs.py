"""A tiny object-store seam (get/put with ETags) under the insight store and traits cache.

Both S3-backed classes are thin wrappers over this, so the in-memory fake runs the very
same layout and parsing code as production. Conditional puts (``If-Match`` /
``If-None-Match``) let concurrent writers of a user's chat index detect lost updates.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from mosaic.errors import ExternalServiceError
from profiles.errors import BlobConflictError


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str


class BlobStore(ABC):
    """Keys are '/'-separated paths inside one bucket."""

    @abstractmethod
    def get(self, key: str) -> Blob | None:
        """The object, or None when it does not exist."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_absent: bool = False) -> None:
        """Write; raise BlobConflictError when a condition does not hold."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (absent is fine)."""


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class MemoryBlobs(BlobStore):
    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.puts = 0

    def get(self, key: str) -> Blob | None:
        with self._lock:
            data = self._objects.get(key)
        return None if data is None else Blob(data, _etag(data))

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_absent: bool = False) -> None:
        with self._lock:
            current = self._objects.get(key)
            if if_absent and current is not None:
                raise BlobConflictError(f"{key} already exists")
            if if_match is not None and (current is None or _etag(current) != if_match):
                raise BlobConflictError(f"{key} changed since it was read")
            self._objects[key] = bytes(data)
            self.puts += 1

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)


class S3Blobs(BlobStore):
    """One bucket through a boto3 S3 client (``mosaic.s3.s3_client`` builds one)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def get(self, key: str) -> Blob | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return Blob(response["Body"].read(), str(response.get("ETag", "")))
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise _external(f"S3 get s3://{self.bucket}/{key}", exc) from exc
        except BotoCoreError as exc:
            raise _external(f"S3 get s3://{self.bucket}/{key}", exc) from exc

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_absent: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, str] = {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        if if_absent:
            extra["IfNoneMatch"] = "*"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                    ContentType="application/json", **extra)
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise BlobConflictError(f"s3://{self.bucket}/{key} changed") from exc
            raise _external(f"S3 put s3://{self.bucket}/{key}", exc) from exc
        except BotoCoreError as exc:
            raise _external(f"S3 put s3://{self.bucket}/{key}", exc) from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _external(f"S3 delete s3://{self.bucket}/{key}", exc) from exc


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _external(what: str, exc: Exception) -> ExternalServiceError:
    # Access and missing-bucket errors will not heal by retrying; the rest may.
    code = _code(exc) if hasattr(exc, "response") else ""
    permanent = code in {"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId",
                         "SignatureDoesNotMatch"}
    return ExternalServiceError(f"{what} failed: {exc}", retryable=not permanent)

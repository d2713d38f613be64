"""The vector index seam: one record per user (id, unit vector, flat metadata).

All adapters share the validation here, so a bad call fails the same way everywhere:
vectors must have the index's dimension, be finite and non-zero (cosine is undefined for
a zero vector); metadata uses the fixed schema below because the Cassandra adapter stores
each field in its own column. Scores are cosine similarities in [-1, 1] on every backend.

Filters use Pinecone's syntax restricted to what every backend can answer exactly:
``{"status": "waiting", "pool": {"$in": ["eu", "us"]}, "opted_in_at": {"$lte": 1.7e9}}``
(fields are ANDed; operators $eq $in $gt $gte $lt $lte on the FILTERABLE fields). There
is no $ne/$nin: Cassandra 5.0 SAI rejects != and its ALLOW FILTERING only post-filters
the ANN candidates, which silently returns fewer than top_k matches.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mosaic.errors import ValidationError

Vector = npt.NDArray[np.float32]
MetaValue = str | int | float | bool

# field -> type. The first five are indexed (Cassandra SAI) and may appear in filters.
FILTERABLE: dict[str, type] = {"status": str, "pool": str, "opted_in_at": float,
                               "missed_cycles": int, "model": str}
METADATA_FIELDS: dict[str, type] = {**FILTERABLE, "fingerprint": str, "updated_at": float}
OPERATORS = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte")
MAX_TOP_K = 1000  # Cassandra's ANN limit; Pinecone allows more but the contract does not
MAX_ID_CHARS = 512
_ID_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


@dataclass(frozen=True, eq=False)
class VectorRecord:
    id: str
    vector: npt.NDArray[Any]  # any float array in; float32 when read back
    metadata: Mapping[str, MetaValue] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Match:
    id: str
    score: float  # cosine similarity
    metadata: Mapping[str, MetaValue]
    vector: Vector | None = None


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: MetaValue | tuple[MetaValue, ...]

    def test(self, metadata: Mapping[str, MetaValue]) -> bool:
        """A record without the field never matches."""
        have = metadata.get(self.field)
        if have is None:
            return False
        v = self.value
        if self.op == "$in":
            return isinstance(v, tuple) and have in v
        if self.op == "$eq":
            return have == v
        if isinstance(v, tuple) or isinstance(have, str) or isinstance(v, str):
            return False
        return {"$gt": have > v, "$gte": have >= v, "$lt": have < v, "$lte": have <= v}[self.op]


# -- validation shared by every adapter -----------------------------------------------


def check_id(record_id: Any) -> str:
    if not isinstance(record_id, str) or not record_id or len(record_id) > MAX_ID_CHARS \
            or not _ID_RE.match(record_id):
        raise ValidationError(f"invalid record id {record_id!r}")
    return record_id


def check_vector(vector: Any, dim: int) -> Vector:
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"vector is not numeric: {exc}") from exc
    if array.shape != (dim,):
        raise ValidationError(f"vector has shape {array.shape}, the index needs ({dim},)")
    if not np.all(np.isfinite(array)):
        raise ValidationError("vector contains NaN or infinity")
    if not np.any(array):
        raise ValidationError("zero vector: cosine similarity is undefined for it")
    return array


def _check_value(name: str, value: Any) -> MetaValue:
    kind = METADATA_FIELDS.get(name)
    if kind is None:
        raise ValidationError(f"unknown metadata field {name!r}; known: "
                              f"{sorted(METADATA_FIELDS)}")
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"metadata {name}={value!r}: expected {kind.__name__}")
    if kind is float and isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    if kind is int and isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    if kind is str and isinstance(value, str) and len(value) <= 512:
        return value
    raise ValidationError(f"metadata {name}={value!r}: expected {kind.__name__}")


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, MetaValue]:
    return {name: _check_value(name, value) for name, value in metadata.items()}


def coerce_metadata(metadata: Mapping[str, Any] | None) -> dict[str, MetaValue]:
    """Stored metadata back to schema types (Pinecone returns every number as float);
    unknown or null fields written by someone else are dropped, not fatal."""
    out: dict[str, MetaValue] = {}
    for name, value in (metadata or {}).items():
        if name in METADATA_FIELDS and value is not None:
            try:
                out[name] = _check_value(name, value)
            except ValidationError:
                continue
    return out


def parse_filter(spec: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    conditions: list[Condition] = []
    for name, raw in sorted((spec or {}).items()):
        if name not in FILTERABLE:
            raise ValidationError(f"cannot filter on {name!r}; filterable: {sorted(FILTERABLE)}")
        ops = raw if isinstance(raw, Mapping) else {"$eq": raw}
        for op, value in sorted(ops.items()):
            if op not in OPERATORS:
                raise ValidationError(f"unsupported filter operator {op!r} on {name}")
            if op == "$in":
                if not isinstance(value, list | tuple) or not value:
                    raise ValidationError(f"$in on {name} needs a non-empty list")
                checked: MetaValue | tuple[MetaValue, ...] = tuple(
                    _check_value(name, v) for v in value)
            else:
                checked = _check_value(name, value)
                if op in ("$gt", "$gte", "$lt", "$lte") and FILTERABLE[name] is str:
                    raise ValidationError(f"range operator {op} on text field {name}")
            conditions.append(Condition(name, op, checked))
    return tuple(conditions)


def unparse_filter(conditions: Sequence[Condition]) -> dict[str, dict[str, Any]]:
    """Back to Pinecone's JSON form ($in values as lists)."""
    out: dict[str, dict[str, Any]] = {}
    for c in conditions:
        out.setdefault(c.field, {})[c.op] = list(c.value) if isinstance(c.value, tuple) \
            else c.value
    return out


class VectorIndex(ABC):
    """Validation lives here; adapters implement the underscored methods."""

    dim: int

    def upsert(self, records: Sequence[VectorRecord]) -> int:
        """Insert or fully replace (vector and all metadata). Returns the count."""
        checked = [VectorRecord(check_id(r.id), check_vector(r.vector, self.dim),
                                check_metadata(r.metadata)) for r in records]
        if len({r.id for r in checked}) != len(checked):
            raise ValidationError("duplicate ids in one upsert")
        if checked:
            self._upsert(checked)
        return len(checked)

    def fetch(self, ids: Sequence[str]) -> dict[str, VectorRecord]:
        """Records by id; unknown ids are simply absent from the result."""
        wanted = list(dict.fromkeys(check_id(i) for i in ids))
        return self._fetch(wanted) if wanted else {}

    def query(self, vector: Any, top_k: int, filter: Mapping[str, Any] | None = None, *,
              include_vectors: bool = False) -> list[Match]:
        """The top_k most cosine-similar records passing the filter, best first."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) \
                or not 1 <= top_k <= MAX_TOP_K:
            raise ValidationError(f"top_k must be an int in 1..{MAX_TOP_K}")
        return self._query(check_vector(vector, self.dim), top_k, parse_filter(filter),
                           include_vectors)

    def update_metadata(self, record_id: str, fields: Mapping[str, Any]) -> bool:
        """Merge fields into the record's metadata; False (and no write) when absent."""
        checked = check_metadata(fields)
        if not checked:
            raise ValidationError("update_metadata needs at least one field")
        return self._update_metadata(check_id(record_id), checked)

    def update_metadata_many(self, record_ids: Sequence[str], fields: Mapping[str, Any]
                             ) -> list[bool]:
        """``update_metadata`` with the same fields for many records (one round trip's
        latency per batch where the backend allows); per id, False when absent."""
        checked = check_metadata(fields)
        if not checked:
            raise ValidationError("update_metadata needs at least one field")
        return self._update_metadata_many([check_id(i) for i in record_ids], checked)

    def _update_metadata_many(self, record_ids: list[str], fields: dict[str, MetaValue]
                              ) -> list[bool]:
        return [self._update_metadata(i, fields) for i in record_ids]

    def delete(self, ids: Sequence[str]) -> None:
        """Remove records; unknown ids are ignored."""
        wanted = list(dict.fromkeys(check_id(i) for i in ids))
        if wanted:
            self._delete(wanted)

    @abstractmethod
    def _upsert(self, records: list[VectorRecord]) -> None: ...

    @abstractmethod
    def _fetch(self, ids: list[str]) -> dict[str, VectorRecord]: ...

    @abstractmethod
    def _query(self, vector: Vector, top_k: int, conditions: tuple[Condition, ...],
               include_vectors: bool) -> list[Match]: ...

    @abstractmethod
    def _update_metadata(self, record_id: str, fields: dict[str, MetaValue]) -> bool: ...

    @abstractmethod
    def _delete(self, ids: list[str]) -> None: ...

    @abstractmethod
    def list_ids(self) -> list[str]:
        """Every id, sorted."""

    @abstractmethod
    def count(self) -> int: ...


def unit(vector: Vector) -> Vector:
    normalized: Vector = (vector / np.linalg.norm(vector)).astype(np.float32)
    return normalized

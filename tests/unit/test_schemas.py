"""The schema files: documented, complete, versioned, and compatible across versions."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from mosaic.errors import SerializationError
from schemas import NAMESPACE, SchemaVersion, load_current, load_history
from streams.events import EVENT_TYPES, Event, to_millis
from streams.samples import sample_events
from streams.serde import (
    MAGIC,
    AvroSerde,
    SchemaRegistry,
    default_serde,
    encode_record,
    fingerprint,
)

pytestmark = pytest.mark.unit

CURRENT = load_current()
HISTORY = load_history()
SAMPLES = {type(e).schema_name: e for e in sample_events()}
VERSIONS = [(name, v) for name, versions in HISTORY.items() for v in versions]
EACH_VERSION = pytest.mark.parametrize(
    ("name", "version"), VERSIONS, ids=[f"{n}-v{v.version}" for n, v in VERSIONS]
)

# Avro's allowed promotions (writer type -> reader type).
_PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
               ("long", "double"), ("float", "double"), ("string", "bytes"),
               ("bytes", "string")}


def _base(avro_type: Any) -> Any:
    if isinstance(avro_type, dict) and avro_type.get("type") not in ("array", "map", "record"):
        return avro_type["type"]  # a logical type reads as its underlying type
    return avro_type


def _readable(writer: Any, reader: Any) -> bool:
    """Can data written as ``writer`` be read as ``reader`` (Avro resolution rules)?"""
    writer, reader = _base(writer), _base(reader)
    if to_parsing_canonical_form(writer) == to_parsing_canonical_form(reader):
        return True
    if isinstance(writer, list):
        return all(_readable(branch, reader) for branch in writer)
    if isinstance(reader, list):
        return any(_readable(writer, branch) for branch in reader)
    if isinstance(writer, str) and isinstance(reader, str):
        return (writer, reader) in _PROMOTIONS
    if isinstance(writer, dict) and isinstance(reader, dict) and writer["type"] == reader["type"]:
        inner = "items" if writer["type"] == "array" else "values"
        return _readable(writer[inner], reader[inner])
    return False


def resolution_problems(writer: dict[str, Any], reader: dict[str, Any]) -> list[str]:
    """Why a reader schema cannot read a writer schema's records (empty: it can)."""
    problems = []
    if writer["name"] != reader["name"]:
        problems.append(f"names differ: {writer['name']} vs {reader['name']}")
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        source = written.get(field["name"])
        if source is None and "default" not in field:
            problems.append(f"{field['name']}: not written and has no default")
        elif source is not None and not _readable(source["type"], field["type"]):
            problems.append(f"{field['name']}: {source['type']} cannot be read as "
                            f"{field['type']}")
    return problems


def test_every_event_type_has_exactly_one_schema() -> None:
    assert sorted(t.schema_name for t in EVENT_TYPES) == sorted(CURRENT)
    assert len(CURRENT) == 12


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_schema_is_documented_and_namespaced(name: str) -> None:
    schema = CURRENT[name]
    assert schema["type"] == "record"
    assert schema["name"] == name
    assert schema["namespace"] == NAMESPACE
    assert schema.get("doc")
    for field in schema["fields"]:
        assert field.get("doc", "").strip(), f"{name}.{field['name']} has no doc"


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_schema_carries_event_id_and_millis_timestamp(name: str) -> None:
    fields = {f["name"]: f for f in CURRENT[name]["fields"]}
    assert fields["event_id"]["type"] == "string"
    assert fields["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_dataclass_fields_match_schema_fields(name: str) -> None:
    schema_fields = [f["name"] for f in CURRENT[name]["fields"]]
    assert sorted(SAMPLES[name].to_dict()) == sorted(schema_fields)


def _committed_as(name: str) -> int:
    """The history version ``<name>.avsc`` equals (0: none)."""
    current = to_parsing_canonical_form(CURRENT[name])
    return next((v.version for v in HISTORY.get(name, [])
                 if to_parsing_canonical_form(v.schema) == current), 0)


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_current_schema_is_the_newest_committed_version_or_the_one_before(name: str) -> None:
    """Readers first (docs/operations.md, "Schema evolution"): a new version is committed
    to history one release before ``<name>.avsc`` (what writers write) becomes it."""
    versions = HISTORY.get(name, [])
    assert [v.version for v in versions] == list(range(1, len(versions) + 1)), (
        f"history/{name} must hold v1..vN without gaps"
    )
    assert versions, f"schemas/history/{name}/v1.avsc is missing"
    committed = _committed_as(name)
    assert committed, (f"{name}.avsc changed: commit it as history/{name}/"
                       f"v{len(versions) + 1}.avsc and release the readers first")
    assert committed >= len(versions) - 1, (
        f"{name}.avsc is v{committed}, history holds up to v{len(versions)}: only one "
        "version may wait for its writers")


@pytest.mark.parametrize(
    ("name", "older", "newer"),
    [(n, a, b) for n, vs in HISTORY.items() for b in vs for a in vs if a.version < b.version],
    ids=lambda x: x if isinstance(x, str) else f"v{x.version}")
def test_every_change_is_backward_compatible(name: str, older: SchemaVersion,
                                             newer: SchemaVersion) -> None:
    """Each committed version reads every version before it: a reader released with it
    read everything still in the topics (compacted seekers keeps records for ever)."""
    assert resolution_problems(older.schema, newer.schema) == []


def test_the_compatibility_walk_covers_every_step() -> None:
    steps = {(n, v.version) for n, vs in HISTORY.items() for v in vs if v.version > 1}
    assert ("OptInRequested", 2) in steps and len(steps) >= 3


def test_history_contains_a_real_evolution() -> None:
    """OptInRequested v1 predates ``pool``: the compatibility tests below bite on it."""
    v1, v2 = HISTORY["OptInRequested"][:2]
    assert "pool" not in {f["name"] for f in v1.schema["fields"]}
    assert fingerprint(v1.schema) != fingerprint(v2.schema)


def test_registry_knows_every_version_by_fingerprint() -> None:
    registry = SchemaRegistry.default()
    for name, version in VERSIONS:
        entry = registry.writer(fingerprint(version.schema))
        assert (entry.name, entry.version) == (name, version.version)
    for name, schema in CURRENT.items():
        assert registry.writer(fingerprint(schema)).name == name


@EACH_VERSION
def test_backward_compatible_current_reads_old(name: str, version: SchemaVersion) -> None:
    assert resolution_problems(version.schema, CURRENT[name]) == []


@EACH_VERSION
def test_forward_compatible_old_reads_current(name: str, version: SchemaVersion) -> None:
    assert resolution_problems(CURRENT[name], version.schema) == []


@EACH_VERSION
def test_old_bytes_decode_into_current_event(name: str, version: SchemaVersion) -> None:
    """Backward, with data: bytes an old producer wrote decode into today's dataclass."""
    event = SAMPLES[name]
    registry = SchemaRegistry.default()
    writer = registry.writer(fingerprint(version.schema))
    data = MAGIC + writer.fingerprint + encode_record(writer, event.to_dict())
    decoded = default_serde().decode(data)
    written = {f["name"] for f in version.schema["fields"]}
    defaults = {f["name"]: f["default"] for f in CURRENT[name]["fields"] if "default" in f}
    expected = {k: (v if k in written else defaults[k]) for k, v in event.to_dict().items()}
    assert decoded.to_dict() == expected


@EACH_VERSION
def test_current_bytes_decode_with_old_reader(name: str, version: SchemaVersion) -> None:
    """Forward, with data: a consumer still on an old schema reads today's events."""
    event: Event = SAMPLES[name]
    body = default_serde().encode(event)[10:]
    writer = fastavro.parse_schema(CURRENT[name])
    reader = fastavro.parse_schema(version.schema)
    record = fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
    assert isinstance(record, dict)
    current = event.to_dict()
    assert set(record) == {f["name"] for f in version.schema["fields"]}
    as_written = {k: to_millis(v) if isinstance(v, datetime) else v for k, v in record.items()}
    staged = {f["name"]: f.get("default") for f in version.schema["fields"]}  # not written yet
    assert as_written == {k: current.get(k, staged[k]) for k in record}


def _staged(name: str) -> SchemaVersion:
    """The next version of ``name`` as the policy allows it: one more field, with a default."""
    schema = {**CURRENT[name], "fields": [*CURRENT[name]["fields"], {
        "name": "added_later", "type": ["null", "string"], "default": None,
        "doc": "A field the writers do not write yet."}]}
    return SchemaVersion(name, len(HISTORY[name]) + 1, schema)


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_readers_released_first_read_the_next_writer(name: str) -> None:
    """Readers first: the release that commits v<N+1> to history (``<name>.avsc`` still vN)
    decodes what the next release's writers write; a reader without it refuses the record
    naming its fingerprint (the agents then dead-letter it)."""
    staged = _staged(name)
    history = {**HISTORY, name: [*HISTORY[name], staged]}
    writer = AvroSerde(SchemaRegistry({**CURRENT, name: staged.schema}, history))
    data = writer.encode(SAMPLES[name])
    assert AvroSerde(SchemaRegistry(CURRENT, history)).decode(data) == SAMPLES[name]
    with pytest.raises(SerializationError, match=fingerprint(staged.schema).hex()):
        default_serde().decode(data)


def test_checker_rejects_incompatible_changes() -> None:
    """The compatibility rules themselves: a required new field or a type change fails."""
    old = CURRENT["BlockRequested"]
    required_new = {**old, "fields": [*old["fields"], {"name": "x", "type": "int", "doc": "x"}]}
    assert resolution_problems(old, required_new) == ["x: not written and has no default"]
    retyped = {**old, "fields": [{**f, "type": "int"} if f["name"] == "request_id" else f
                                 for f in old["fields"]]}
    assert resolution_problems(old, retyped)
    widened = {**old, "fields": [{**f, "type": ["null", "string"]}
                                 if f["name"] == "request_id" else f for f in old["fields"]]}
    assert resolution_problems(old, widened) == []

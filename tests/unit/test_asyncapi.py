"""docs/asyncapi.json is what ``mosaic asyncapi`` writes from the topic catalog and the Avro
schemas, it is a valid AsyncAPI 3.0.0 document (the official JSON schema, vendored from
the npm package @asyncapi/specs), and it names every topic, key and event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.ops.asyncapi import AVRO_FORMAT, DOC_PATH, document, render
from schemas import load_current
from streams.topics import SPECS

pytestmark = pytest.mark.unit

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi-3.0.0.schema.json"


def test_committed_document_is_current() -> None:
    assert DOC_PATH.read_text() == render(), (
        "docs/asyncapi.json is out of date: run 'mosaic asyncapi'")


def test_document_is_valid_asyncapi_3() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in validator.iter_errors(json.loads(DOC_PATH.read_text()))]
    assert not errors, errors[:5]
    broken = document()
    broken["components"]["messages"]["OptInRequested"]["payload"]["schema"] = {"type": "x"}
    assert list(validator.iter_errors(broken)), "the Avro payload is not checked"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_topic_key_and_event_is_in_it() -> None:
    doc = document()
    assert set(doc["channels"]) == {s.logical for s in SPECS}
    for spec in SPECS:
        channel = doc["channels"][spec.logical]
        assert channel["address"] == "{prefix}" + spec.logical
        assert spec.key in channel["description"]
        assert set(channel["messages"]) == {t.schema_name for t in spec.event_types}
    avsc = load_current()
    assert set(doc["components"]["messages"]) == set(avsc)
    for name, message in doc["components"]["messages"].items():
        assert message["payload"] == {"schemaFormat": AVRO_FORMAT, "schema": avsc[name]}
    for ref in _refs(doc):  # every internal reference resolves
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]

"""``mosaic index create|status`` against the Pinecone stand-in's control plane, driven
through the real CLI and the ``pinecone`` SDK: missing -> created (serverless spec from
settings) -> found again; the host it reports serves the vector index; a settings change
that would mix vector spaces is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from app.cli import main
from profiles.index import VectorRecord
from profiles.pinecone_index import PineconeVectorIndex
from standins.pinecone import PineconeStandin

pytestmark = pytest.mark.integration


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[PineconeStandin]:
    with PineconeStandin(dimension=64, api_key="cli-key") as server:
        for name, value in {"VECTOR_INDEX__PINECONE_API_KEY": "cli-key",
                            "VECTOR_INDEX__PINECONE_CONTROL_URL": server.url,
                            "VECTOR_INDEX__PINECONE_INDEX_NAME": "mosaic-test",
                            "VECTOR_INDEX__PINECONE_REGION": "eu-west-1",
                            "EMBEDDING__BACKEND": "vertex",
                            "EMBEDDING__OUTPUT_DIMENSIONALITY": "64"}.items():
            monkeypatch.setenv(f"MOSAIC_{name}", value)
        yield server


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def test_index_create_then_status(standin: PineconeStandin,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "index", "status")
    assert code == 1 and json.loads(out)["action"] == "missing"
    code, out = _run(capsys, "index", "create")
    created = json.loads(out)
    assert code == 0 and created == {"name": "mosaic-test", "host": standin.url,
                                     "dimension": 64, "metric": "cosine", "ready": True,
                                     "state": "Ready", "action": "created"}
    (request,) = [r for r in standin.requests if r.method == "POST"]
    assert request.body["deployment"] == {"deployment_type": "managed", "cloud": "aws",
                                          "region": "eu-west-1"}
    code, out = _run(capsys, "index", "create")  # idempotent
    assert code == 0 and json.loads(out)["action"] == "found"
    assert len([r for r in standin.requests if r.method == "POST"]) == 1
    code, out = _run(capsys, "index", "status")
    assert code == 0 and json.loads(out)["ready"]
    index = PineconeVectorIndex.connect(api_key="cli-key", host=created["host"], dim=64,
                                        namespace="seekers")
    index.upsert([VectorRecord("u1", np.ones(64, dtype=np.float32), {"status": "waiting"})])
    assert index.count() == 1


def test_index_of_another_dimension_is_refused(standin: PineconeStandin,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(capsys, "index", "create")[0] == 0
    monkeypatch.setenv("MOSAIC_EMBEDDING__OUTPUT_DIMENSIONALITY", "32")
    code, out = _run(capsys, "index", "create")
    assert code == 1 and "dimension 64" in out and "need 32" in out

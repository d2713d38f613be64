"""Fuzz the live ingress from its own OpenAPI document (schemathesis): never a 5xx.

Requests are signed after schemathesis built them (a requests auth hook sees the final
method, path and body), so the fuzzing reaches past the signature check into decoding,
validation, rate limiting and publishing to the real Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from mosaic.settings import Settings as MosaicSettings
from producers.bootstrap import build_production_app, serve_in_thread
from producers.signing import signed_headers
from stack.base import Service

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def ingress_url(settings: MosaicSettings, kafka_stack: Service) -> Iterator[str]:
    # Memory state store: this fuzzes HTTP + Kafka, not Cassandra.
    cfg = settings.ingress.model_copy(update={"state_store": "memory"})
    app = build_production_app(settings.model_copy(update={"ingress": cfg}))
    server = serve_in_thread(app)
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


class HmacAuth(requests.auth.AuthBase):
    def __init__(self, key: bytes) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        data = body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]
        path, _, query = request.path_url.partition("?")
        request.headers.update(signed_headers(self.key, str(request.method), path, data,
                                              query=query))
        return request


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def test_fuzz_from_openapi_finds_no_server_error(settings: MosaicSettings,
                                                 ingress_url: str) -> None:
    session = requests.Session()
    session.auth = HmacAuth(settings.ingress.hmac_key.get_secret_value().encode())
    session.trust_env = False
    operations = _operations(ingress_url)
    assert {op.path for op in operations} >= {"/user/{user_id}/opt-in-embedding",
                                              "/user/{user_id}/block"}
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=80, deadline=None,
                             suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call(base_url=ingress_url, session=session)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            case.validate_response(response, checks=[not_a_server_error])

        check()
    session.close()
    assert not any(code >= 500 for code in seen), seen
    assert 202 in seen and 422 in seen, seen  # the fuzz got past the signature check

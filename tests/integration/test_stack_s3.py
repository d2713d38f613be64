"""S3 through moto's real HTTP server, with boto3 unchanged."""

from __future__ import annotations

import pytest

from mosaic.s3 import s3_client
from mosaic.settings import Settings
from stack.base import Service
from tests.support import assert_up_reuses

pytestmark = pytest.mark.integration


def test_put_and_get_object(settings: Settings, s3_stack: Service, unique: str) -> None:
    client = s3_client(settings.s3)
    key = f"smoke/{unique}.json"
    client.put_object(Bucket=settings.s3.insights_bucket, Key=key, Body=b'{"ok": true}')
    body = client.get_object(Bucket=settings.s3.insights_bucket, Key=key)["Body"].read()
    assert body == b'{"ok": true}'


@pytest.mark.stack_scripts
def test_up_twice_reuses_running_server(s3_stack: Service) -> None:
    assert_up_reuses(s3_stack)

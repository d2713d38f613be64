"""One way to make a boto3 S3 client from settings (endpoint, region, keys, timeouts).

The insight store, the traits cache, the local stack's health check and the tests all take
their client from here, so runtime code never imports the dev stack for it.
"""

from __future__ import annotations

from typing import Any

from mosaic.settings import S3Settings


def s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id.get_secret_value(),
        aws_secret_access_key=settings.secret_access_key.get_secret_value(),
        config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
    )

"""S3 endpoint through moto's server (Apache-2.0), which boto3 talks to unchanged."""

from __future__ import annotations

import sys
from urllib.parse import urlparse

from mosaic.errors import StackError
from mosaic.s3 import s3_client
from stack.base import Service


class S3(Service):
    name = "s3"

    def _host_port(self) -> tuple[str, int]:
        url = self.settings.s3.endpoint_url
        if url is None:
            raise StackError("MOSAIC_S3__ENDPOINT_URL is unset: the local stack needs one")
        parsed = urlparse(url)
        return parsed.hostname or "127.0.0.1", parsed.port or 5000

    def install(self) -> None:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise StackError("moto[server] is not installed: pip install -e '.[stack]'") from exc

    def command(self) -> tuple[list[str], dict[str, str]]:
        host, port = self._host_port()
        return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], {}

    def healthy(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3_client(self.settings.s3).list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def after_start(self) -> None:
        client = s3_client(self.settings.s3)
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in (self.settings.s3.insights_bucket, self.settings.s3.traits_cache_bucket):
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def up(self) -> str:
        line = super().up()
        self.after_start()  # buckets also when reusing a running server
        return line

    def where(self) -> str:
        return str(self.settings.s3.endpoint_url)

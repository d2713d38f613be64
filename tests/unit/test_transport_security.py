"""Kafka and Cassandra TLS / SASL settings reach the clients; the local stack stays plain."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from mosaic.cassandra import security_options
from mosaic.errors import ConfigError
from mosaic.settings import CassandraSettings, KafkaSettings, Settings
from streams.kafka import (
    consumer_config,
    faust_credentials,
    producer_config,
    security_config,
)

pytestmark = pytest.mark.unit


def _kafka(**fields: object) -> Settings:
    return Settings(kafka=KafkaSettings(**fields))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "client.key", folder / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=mosaic-test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, cert, key  # the self-signed cert doubles as the CA


def test_local_defaults_are_plaintext() -> None:
    settings = Settings()
    assert security_config(settings) == {}
    assert "security.protocol" not in producer_config(settings)
    assert faust_credentials(settings) is None
    assert security_options(settings.cassandra) == {}


def test_sasl_ssl_reaches_producer_consumer_and_admin_configs(
        tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    settings = _kafka(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="mosaic", sasl_password="s3cret-password-value",
                      ssl_ca_location=ca, ssl_certificate_location=cert,
                      ssl_key_location=key)
    expected = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "mosaic", "sasl.password": "s3cret-password-value",
                "ssl.ca.location": str(ca), "ssl.certificate.location": str(cert),
                "ssl.key.location": str(key)}
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert expected.items() <= config.items()
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "mosaic"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_ssl_only_and_plain_sasl() -> None:
    assert security_config(_kafka(security_protocol="SSL")) == {"security.protocol": "SSL"}
    assert isinstance(faust_credentials(_kafka(security_protocol="SSL")), faust.SSLCredentials)
    plain = security_config(_kafka(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                   sasl_username="u", sasl_password="p"))
    assert plain["sasl.mechanism"] == "PLAIN"
    assert "ssl.ca.location" not in plain


def test_sasl_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        security_config(_kafka(security_protocol="SASL_SSL"))


def test_cassandra_password_and_tls(tls_files: tuple[Path, Path, Path]) -> None:
    from cassandra.auth import PlainTextAuthProvider

    ca, cert, key = tls_files
    options = security_options(CassandraSettings(
        username="mosaic", password="a-cassandra-password", ssl_ca_file=ca,
        ssl_cert_file=cert, ssl_key_file=key))
    assert isinstance(options["auth_provider"], PlainTextAuthProvider)
    assert options["auth_provider"].username == "mosaic"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    relaxed = security_options(CassandraSettings(ssl_ca_file=ca, ssl_check_hostname=False))
    assert not relaxed["ssl_context"].check_hostname

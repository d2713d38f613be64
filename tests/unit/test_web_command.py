"""``mosaic web``: the built client and its generated config.json over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.web import WebServer
from mosaic.settings import IdentitySettings, NakamaSettings, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    out = tmp_path / "dist"
    out.mkdir()
    (out / "index.html").write_text("<!doctype html><title>t</title>")
    (out / "app.js").write_text("console.log('app')")
    (tmp_path / "secret.txt").write_text("outside the bundle")
    return out


@pytest.fixture
def served(dist: Path) -> Iterator[tuple[WebServer, httpx.Client]]:
    settings = Settings(nakama=NakamaSettings(url="https://nakama.example:7443"),
                        identity=IdentitySettings(issuer="http://127.0.0.1:8090/",
                                                  audience="client-1"))
    server = WebServer(settings, port=0, dist=dist).start()
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5.0) as http:
        yield server, http
    server.stop()


def test_config_json_names_nakama_and_the_issuer(served: tuple[WebServer, httpx.Client]) -> None:
    server, http = served
    resp = http.get("/config.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    config = resp.json()
    assert config["nakama"] == {"host": "nakama.example", "port": "7443", "useSSL": True,
                                "serverKey": "mosaic-local-server-key"}
    assert config["oidc"] == {"issuer": "http://127.0.0.1:8090", "clientId": "client-1",
                              "redirectUri": f"{server.url}/", "scope": "openid"}
    assert "http_key" not in resp.text and "mosaic-local-http-key" not in resp.text


def test_serves_the_bundle_and_nothing_else(served: tuple[WebServer, httpx.Client]) -> None:
    _, http = served
    index = http.get("/")
    assert index.status_code == 200 and index.headers["content-type"] == "text/html"
    assert index.headers["cache-control"] == "no-store"
    assert http.get("/app.js").text == "console.log('app')"
    assert http.get("/missing.js").status_code == 404
    for sneaky in ("/../secret.txt", "/%2e%2e/secret.txt", "//etc/passwd"):
        resp = http.get(sneaky)
        assert resp.status_code == 404 and "outside" not in resp.text, sneaky


def test_an_unbuilt_client_is_a_clear_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "--port", "0", "--dist", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the web client is not built" in err and "npm ci" in err
    assert "index.html" in err and "app.js" in err


def test_a_taken_port_is_a_clear_error(served: tuple[WebServer, httpx.Client], dist: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = served
    port = server.url.rsplit(":", 1)[1]
    assert main(["web", "--port", port, "--dist", str(dist)]) == 1
    assert f"cannot serve the web client on 127.0.0.1:{port}" in capsys.readouterr().err

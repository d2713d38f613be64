"""A local OIDC issuer standing in for the Cognito user pool (local stack, tests, demo).

It speaks the parts of OpenID Connect Discovery and RFC 7517 (JWKS) that a relying party
uses, like Cognito's ``https://cognito-idp.<region>.amazonaws.com/<pool id>``::

    GET  /.well-known/openid-configuration   issuer, jwks_uri, algorithms
    GET  /.well-known/jwks.json              the public keys (RS256, with ``kid``)

the browser sign-in of a public client, authorization code + PKCE and refresh tokens, at
Cognito's paths (standins/oidc_flow.py)::

    GET|POST /oauth2/authorize                   a plain HTML sign-in form -> 302 with a code
    POST     /oauth2/token                       code or refresh token -> ID token

and, for local use only (Cognito's equivalent is ``InitiateAuth``):

    POST /mint    {"sub", "aud"?, "ttl_seconds"?, "claims"?}  -> {"id_token", "expires_at"}
    POST /rotate  {"retire_old"?: bool}                       -> {"kid", "kids"}

Minted ID tokens carry Cognito's claims (``sub``, ``aud`` = client id, ``iss``,
``token_use=id``, ``auth_time``, ``iat``, ``exp``, ``cognito:username``). ``claims``
overrides any of them (tests mint expired or wrong-audience tokens that way). Key pairs
(RSA 2048) persist in a 0600 JSON file so a restart keeps the published keys; ``/rotate``
makes a new key the signing key and keeps the old one published unless retired. Every answer
allows any origin (CORS): the web client on another loopback port reads the discovery
document and calls the token endpoint. Production refuses a loopback issuer
(mosaic/production.py).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from standins._http import RawReply, Reply, StandinServer
from standins.oidc_flow import AuthorizationFlow

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 24 * 3600
CORS_HEADERS = {"Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600"}


def new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class OidcIssuerStandin(StandinServer):
    """``OidcIssuerStandin(issuer=..., port=...).start()``; keys in ``state_file`` if given."""

    def __init__(self, *, issuer: str | None = None, audience: str = "mosaic-local-client",
                 state_file: Path | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self._issuer = issuer
        self.audience = audience
        self._state_file = state_file
        self._keys_lock = threading.Lock()
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []  # newest (signing) last
        self._load_or_create()
        self.flow = AuthorizationFlow(client_id=audience, ttl_seconds=DEFAULT_TTL_SECONDS,
                                      mint=lambda sub, claims: self.mint(sub, claims=claims))

    @property
    def issuer(self) -> str:
        return self._issuer or self.url

    # -- keys ---------------------------------------------------------------------------
    def _load_or_create(self) -> None:
        if self._state_file is not None and self._state_file.exists():
            state = json.loads(self._state_file.read_text())
            self._keys = [(k["kid"], serialization.load_pem_private_key(
                k["pem"].encode(), password=None)) for k in state["keys"]]  # type: ignore[misc]
        if not self._keys:
            self._keys = [(uuid.uuid4().hex, new_private_key())]
            self._save()

    def _save(self) -> None:
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_name(f".{self._state_file.name}.tmp")
        data = json.dumps({"keys": [{"kid": kid, "pem": _pem(key)} for kid, key in self._keys]})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, self._state_file)

    def rotate(self, *, retire_old: bool = False) -> str:
        """A new signing key; the old ones stay published unless ``retire_old``."""
        kid = uuid.uuid4().hex
        with self._keys_lock:
            keys = [] if retire_old else self._keys[-1:]  # keep at most one previous key
            self._keys = [*keys, (kid, new_private_key())]
            self._save()
        return kid

    @property
    def kids(self) -> list[str]:
        with self._keys_lock:
            return [kid for kid, _ in self._keys]

    def jwks(self) -> dict[str, Any]:
        with self._keys_lock:
            return {"keys": [public_jwk(key, kid) for kid, key in self._keys]}

    def mint(self, sub: str, *, aud: str | None = None, ttl_seconds: int = DEFAULT_TTL_SECONDS,
             claims: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": sub, "aud": aud or self.audience, "iss": self.issuer, "token_use": "id",
            "auth_time": now, "iat": now, "exp": now + ttl_seconds,
            "cognito:username": sub, "jti": uuid.uuid4().hex,
        }
        body.update(claims or {})
        with self._keys_lock:
            kid, key = self._keys[-1]
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    # -- HTTP ---------------------------------------------------------------------------
    def _serve(self, method: str, raw_path: str, headers: dict[str, str],
               raw_body: bytes) -> tuple[int, Any, dict[str, str]]:
        status, reply, extra = super()._serve(method, raw_path, headers, raw_body)
        with self._lock:  # a long-running stack service: keep only the recent requests
            del self._state.requests[:-200]
        extra.update(CORS_HEADERS)
        return status, reply, extra

    def parse_body(self, headers: dict[str, str], raw_body: bytes) -> Any:
        # The token endpoint and the sign-in form post application/x-www-form-urlencoded.
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return parse_qs(raw_body.decode("utf-8", "strict"), keep_blank_values=True)
        return super().parse_body(headers, raw_body)

    def error(self, status: int, message: str) -> Any:
        return {"error": "invalid_request" if status < 500 else "server_error",
                "error_description": message}

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: Any) -> Reply:
        fields = body if isinstance(body, dict) else {}
        if method == "OPTIONS":  # a CORS preflight: the headers say it all
            return 204, RawReply(b"", "text/plain")
        route = self._routes().get((method, path))
        if route is None:
            return 404, self.error(404, f"no such endpoint: {method} {path}")
        return route(query if method == "GET" else fields)

    def _routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Reply]]:
        return {
            ("GET", "/.well-known/openid-configuration"): lambda _: (200, self.discovery()),
            ("GET", "/.well-known/jwks.json"): lambda _: (200, self.jwks()),
            ("GET", "/health"): lambda _: (200, {"ok": True, "kids": self.kids}),
            ("GET", "/oauth2/authorize"): lambda q: self.flow.authorize("GET", q),
            ("POST", "/oauth2/authorize"): lambda f: self.flow.authorize("POST", f),
            ("POST", "/oauth2/token"): self.flow.token,
            ("POST", "/mint"): self._mint,
            ("POST", "/rotate"): self._rotate,
        }

    def _rotate(self, body: dict[str, Any]) -> Reply:
        kid = self.rotate(retire_old=bool(body.get("retire_old")))
        return 200, {"kid": kid, "kids": self.kids}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "authorization_endpoint": f"{self.issuer}/oauth2/authorize",
            "token_endpoint": f"{self.issuer}/oauth2/token",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": ["sub", "aud", "iss", "exp", "iat", "auth_time",
                                 "token_use", "cognito:username"],
        }

    def _mint(self, body: dict[str, Any]) -> Reply:  # JSON body
        sub, ttl = body.get("sub"), body.get("ttl_seconds", DEFAULT_TTL_SECONDS)
        if not isinstance(sub, str) or not sub:
            return 400, self.error(400, "sub is required")
        if not isinstance(ttl, int) or not -MAX_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            return 400, self.error(400, "ttl_seconds must be an integer within a day")
        claims = body.get("claims") or {}
        aud = body.get("aud")
        if not isinstance(claims, dict) or not (aud is None or isinstance(aud, str)):
            return 400, self.error(400, "claims must be an object, aud a string")
        token = self.mint(sub, aud=aud, ttl_seconds=ttl, claims=claims)
        self.flow.saw_user(sub)
        return 200, {"id_token": token, "token_type": "Bearer",
                     "expires_at": int(time.time()) + ttl}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="local OIDC issuer stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args(argv)
    standin = OidcIssuerStandin(issuer=args.issuer, audience=args.audience,
                                state_file=args.state_file, host=args.host, port=args.port)
    standin.start()
    print(f"OIDC issuer stand-in at {standin.issuer} (kids {standin.kids})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()

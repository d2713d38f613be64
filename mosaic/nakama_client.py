"""A minimal Nakama game-client over HTTP: what a user's app does (custom-id login with a
Cognito ID token, RPCs, notifications, groups). Used by the demo and by end-to-end checks.

Logins carry an ID token in ``vars.id_token`` (nakama/modules/mosaic_auth.lua verifies it).
Locally the token comes from the OIDC issuer stand-in's ``/mint`` (standins/oidc.py); a
real app gets it from Cognito's sign-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mosaic.errors import ExternalServiceError
from mosaic.settings import IdentitySettings, NakamaSettings

IdTokenSource = Callable[[str], str]  # Cognito sub -> ID token


class LocalIssuer:
    """ID tokens from the local OIDC issuer stand-in (``POST <issuer>/mint``)."""

    def __init__(self, identity: IdentitySettings, client: httpx.Client | None = None) -> None:
        self._issuer = identity.issuer.rstrip("/")
        self._http = client or httpx.Client(timeout=10.0, trust_env=False)

    def mint(self, sub: str, **fields: Any) -> str:
        """An ID token for ``sub``; ``fields`` go to /mint (aud, ttl_seconds, claims)."""
        resp = self._http.post(f"{self._issuer}/mint", json={"sub": sub, **fields})
        if resp.status_code != 200:
            raise ExternalServiceError(f"OIDC stand-in /mint answered {resp.status_code}",
                                       retryable=resp.status_code >= 500)
        return str(resp.json()["id_token"])

    def rotate(self, *, retire_old: bool = False) -> str:
        resp = self._http.post(f"{self._issuer}/rotate", json={"retire_old": retire_old})
        if resp.status_code != 200:
            raise ExternalServiceError(f"OIDC stand-in /rotate answered {resp.status_code}")
        return str(resp.json()["kid"])

    def __call__(self, sub: str) -> str:
        return self.mint(sub)


@dataclass(frozen=True)
class Session:
    custom_id: str
    user_id: str
    token: str


class NakamaClient:
    """``id_tokens`` maps a sub to its ID token; by default the local issuer stand-in of
    ``Settings().identity`` mints one."""

    def __init__(self, settings: NakamaSettings, client: httpx.Client | None = None, *,
                 id_tokens: IdTokenSource | None = None) -> None:
        self._server_key = settings.server_key.get_secret_value()
        self._http = client or httpx.Client(base_url=settings.url, timeout=15.0,
                                            trust_env=False)
        self._id_tokens = id_tokens

    def login(self, custom_id: str, id_token: str | None = None) -> Session:
        """Authenticate by custom id (the Cognito sub) with its ID token, creating the
        account if needed."""
        if id_token is None:
            if self._id_tokens is None:
                from mosaic.settings import Settings

                self._id_tokens = LocalIssuer(Settings().identity)
            id_token = self._id_tokens(custom_id)
        resp = self.authenticate(custom_id, id_token)
        body = self._check(resp, "login")
        token = str(body["token"])
        account = self._check(self._http.get("/v2/account", headers=_bearer(token)), "account")
        return Session(custom_id, str(account["user"]["id"]), token)

    def authenticate(self, custom_id: str, id_token: str | None) -> httpx.Response:
        """The raw AuthenticateCustom call (tests look at refusals)."""
        account: dict[str, Any] = {"id": custom_id}
        if id_token is not None:
            account["vars"] = {"id_token": id_token}
        return self._http.post("/v2/account/authenticate/custom", params={"create": "true"},
                               json=account, auth=(self._server_key, ""))

    def rpc(self, session: Session, rpc_id: str, payload: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        # Client RPCs take the payload as a JSON string inside a JSON body.
        resp = self._http.post(f"/v2/rpc/{rpc_id}", headers=_bearer(session.token),
                               content=json.dumps(json.dumps(payload or {})))
        body = self._check(resp, rpc_id)
        return dict(json.loads(body.get("payload") or "{}"))

    def set_display_name(self, session: Session, display_name: str) -> None:
        """The name other users see (the partner's name in a match notification)."""
        self._check(self._http.put("/v2/account", headers=_bearer(session.token),
                                   json={"display_name": display_name}), "account update")

    def notifications(self, session: Session) -> list[dict[str, Any]]:
        resp = self._http.get("/v2/notification", params={"limit": 100},
                              headers=_bearer(session.token))
        return list(self._check(resp, "notifications").get("notifications", []))

    def groups(self, session: Session) -> list[dict[str, Any]]:
        resp = self._http.get(f"/v2/user/{session.user_id}/group", params={"limit": 100},
                              headers=_bearer(session.token))
        return [g["group"] for g in self._check(resp, "groups").get("user_groups", [])]

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code >= 300:
            raise ExternalServiceError(
                f"Nakama {what} answered {resp.status_code}: {resp.text[:300]}",
                retryable=resp.status_code >= 500)
        return dict(resp.json())

    def close(self) -> None:
        self._http.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

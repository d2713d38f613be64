"""A minimal Nakama game-client over HTTP: what a user's app does (custom-id login, RPCs,
notifications, groups). Used by the demo and by end-to-end checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from mosaic.errors import ExternalServiceError
from mosaic.settings import NakamaSettings


@dataclass(frozen=True)
class Session:
    custom_id: str
    user_id: str
    token: str


class NakamaClient:
    def __init__(self, settings: NakamaSettings, client: httpx.Client | None = None) -> None:
        self._server_key = settings.server_key.get_secret_value()
        self._http = client or httpx.Client(base_url=settings.url, timeout=15.0,
                                            trust_env=False)

    def login(self, custom_id: str) -> Session:
        """Authenticate by custom id (the Cognito sub), creating the account if needed."""
        resp = self._http.post("/v2/account/authenticate/custom", params={"create": "true"},
                               json={"id": custom_id}, auth=(self._server_key, ""))
        body = self._check(resp, "login")
        token = str(body["token"])
        account = self._check(self._http.get("/v2/account", headers=_bearer(token)), "account")
        return Session(custom_id, str(account["user"]["id"]), token)

    def rpc(self, session: Session, rpc_id: str, payload: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        # Client RPCs take the payload as a JSON string inside a JSON body.
        resp = self._http.post(f"/v2/rpc/{rpc_id}", headers=_bearer(session.token),
                               content=json.dumps(json.dumps(payload or {})))
        body = self._check(resp, rpc_id)
        return dict(json.loads(body.get("payload") or "{}"))

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

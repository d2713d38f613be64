"""Simulated users for the population bench: what the web client does, without a browser.

Each user gets an ID token from the OIDC issuer stand-in (``/mint``), logs in to Nakama by
custom id with it (as mosaic/nakama_client.py and web/src/session.ts do), keeps Nakama's
realtime socket open (``/ws?token=...&format=json``), opts in through
``rpc_opt_in_match`` and records every match notification (code 101) that arrives ON THE
SOCKET with its arrival time. One asyncio loop holds every socket; sign-ins and opt-ins
run ``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mosaic.retry import Backoff, Jitter, is_transient_status
from mosaic.settings import Settings

MATCH_CODE = 101  # nakama/modules/mosaic_rooms.lua's match notification
Progress = Callable[[int], None]  # called with the number done so far
# A real client retries a dropped connection or a 5xx; the bench's own attempts policy.
RETRY = Backoff(0.2, 5.0, Jitter.FULL)
ATTEMPTS = 5


@dataclass
class SimUser:
    custom_id: str
    user_id: str = ""
    token: str = ""
    opted_in_at: float = 0.0  # epoch seconds the opt-in RPC was sent
    opt_in_seconds: float = 0.0  # its answer's round trip (retries included)
    notes: list[tuple[float, str]] = field(default_factory=list)  # (arrival, cycle id)
    error: str = ""  # the last failure (sign-in, socket, opt-in)
    socket_closed: str = ""  # set when the socket closed before the end

    def count(self, cycle_id: str) -> int:
        return sum(1 for _, cycle in self.notes if cycle == cycle_id)


class Population:
    """``async with Population(settings, ids) as users: await users.sign_in_all()...``"""

    def __init__(self, settings: Settings, custom_ids: Sequence[str], *,
                 concurrency: int = 64) -> None:
        self.users = [SimUser(c) for c in custom_ids]
        self._settings = settings
        self._limit = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            timeout=60.0, trust_env=False,
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency))
        self._sockets: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Population:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sign_in_all(self, progress: Progress) -> None:
        await self._each(self._sign_in, progress)

    async def opt_in_all(self, pool: str, progress: Progress) -> None:
        await self._each(lambda u: self._opt_in(u, pool), progress)

    async def _each(self, step: Callable[[SimUser], Awaitable[None]],
                    progress: Progress) -> None:
        done = 0

        async def one(user: SimUser) -> None:
            nonlocal done
            async with self._limit:
                try:
                    await step(user)
                except Exception as exc:  # noqa: BLE001 - reported per user, run goes on
                    user.error = f"{type(exc).__name__}: {exc}"[:300]
            done += 1
            progress(done)

        await asyncio.gather(*(one(u) for u in self.users if not u.error))

    async def _post(self, what: str, url: str, **kwargs: Any) -> httpx.Response:
        """POST with retries of dropped connections and 408/429/5xx answers."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                resp = await self._http.post(url, **kwargs)
                if not is_transient_status(resp.status_code) or attempt == ATTEMPTS:
                    break
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS:
                    raise RuntimeError(f"{what}: {type(exc).__name__} {exc}") from exc
            await asyncio.sleep(RETRY.delay(attempt))
        if resp.status_code >= 300:
            raise RuntimeError(f"{what} answered {resp.status_code}: {resp.text[:200]}")
        return resp

    async def _sign_in(self, user: SimUser) -> None:
        s = self._settings
        mint = await self._post("OIDC /mint", f"{s.identity.issuer.rstrip('/')}/mint",
                                json={"sub": user.custom_id})
        auth = await self._post(
            "Nakama authenticate", f"{s.nakama.url}/v2/account/authenticate/custom",
            params={"create": "true"},
            json={"id": user.custom_id, "vars": {"id_token": mint.json()["id_token"]}},
            auth=(s.nakama.server_key.get_secret_value(), ""))
        user.token = str(auth.json()["token"])
        user.user_id = str(_claims(user.token)["uid"])
        ws_url = s.nakama.url.replace("http", "ws", 1)
        ws = await connect(f"{ws_url}/ws?lang=en&status=false&format=json&token={user.token}",
                           open_timeout=60, ping_interval=None, compression=None,
                           proxy=None, max_queue=None)
        self._sockets.append(ws)
        self._readers.append(asyncio.create_task(_read(ws, user)))

    async def _opt_in(self, user: SimUser, pool: str) -> None:
        # One request id for every attempt: the ingress takes a repeat as the same opt-in.
        payload = {"pool": pool, "request_id": str(uuid.uuid4())}
        user.opted_in_at = time.time()
        # Client RPCs take the payload as a JSON string inside a JSON body.
        resp = await self._post(
            "rpc_opt_in_match", f"{self._settings.nakama.url}/v2/rpc/rpc_opt_in_match",
            headers={"Authorization": f"Bearer {user.token}"},
            content=json.dumps(json.dumps(payload)))
        user.opt_in_seconds = time.time() - user.opted_in_at
        answer = json.loads(resp.json().get("payload") or "{}")
        if not answer.get("accepted"):
            raise RuntimeError(f"opt-in not accepted: {answer}")

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self._http.aclose()


async def _read(ws: ClientConnection, user: SimUser) -> None:
    """Every envelope of the socket; match notifications are kept with their arrival."""
    try:
        async for raw in ws:
            now = time.time()
            for note in _match_notes(json.loads(raw)):
                user.notes.append((now, note))
    except ConnectionClosed as exc:
        user.socket_closed = f"closed: {exc}"


def _match_notes(envelope: dict[str, Any]) -> list[str]:
    """The cycle ids of the match notifications in one realtime envelope."""
    notes = (envelope.get("notifications") or {}).get("notifications") or []
    return [str(json.loads(n.get("content") or "{}").get("cycle_id", ""))
            for n in notes if int(n.get("code", 0)) == MATCH_CODE]


def _claims(token: str) -> dict[str, Any]:
    """The payload of Nakama's session JWT (its ``uid`` is the Nakama user id)."""
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))

"""The browser sign-in of the OIDC issuer stand-in: authorization code + PKCE (RFC 7636, S256
only) and refresh tokens, the way Cognito's hosted UI and token endpoint answer a public
client (no client secret)::

    GET  /oauth2/authorize   client_id, redirect_uri, response_type=code, state,
                             code_challenge, code_challenge_method=S256, scope, nonce?
                             -> a plain HTML sign-in form (type a user's sub or pick one)
    POST /oauth2/authorize   the form -> 302 to redirect_uri?code=...&state=...
    POST /oauth2/token       grant_type=authorization_code (code, redirect_uri, client_id,
                             code_verifier) or grant_type=refresh_token (refresh_token,
                             client_id) -> {id_token, access_token, refresh_token, expires_in}

A redirect_uri must be a loopback http(s) URL (the stand-in has no registered clients; Cognito
checks the app client's callback URLs). A sub must be a valid user id of the system
(producers/domain.py). Codes live two minutes and work once; refresh tokens live in memory
only (a restart signs everyone out). Errors in the token endpoint use RFC 6749's bodies.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from producers.domain import valid_user_id
from standins._http import RawReply, Reply

CODE_TTL_SECONDS = 120
MAX_PENDING = 10_000  # codes and refresh tokens kept, oldest dropped first
RECENT_USERS = 12
# The authorize request's parameters, carried through the form as hidden fields.
AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state",
                    "code_challenge", "code_challenge_method", "nonce")

Mint = Callable[[str, dict[str, Any]], str]  # (sub, claims) -> signed JWT


@dataclass(frozen=True)
class Grant:
    sub: str
    client_id: str
    auth_time: int
    redirect_uri: str = ""
    code_challenge: str = ""
    nonce: str = ""
    expires_at: float = 0.0


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost")


def _one(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name, "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def _token_error(code: str, description: str, status: int = 400) -> Reply:
    return status, {"error": code, "error_description": description}


class AuthorizationFlow:
    """Codes, refresh tokens and the sign-in page; ``mint`` signs the tokens."""

    def __init__(self, *, client_id: str, mint: Mint, ttl_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self._mint = mint
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: OrderedDict[str, Grant] = OrderedDict()
        self._refresh: OrderedDict[str, Grant] = OrderedDict()
        self._recent: OrderedDict[str, None] = OrderedDict()

    def saw_user(self, sub: str) -> None:
        """Remember ``sub`` for the sign-in page's pick list (newest first)."""
        with self._lock:
            self._recent.pop(sub, None)
            self._recent[sub] = None
            while len(self._recent) > RECENT_USERS:
                self._recent.popitem(last=False)

    def recent_users(self) -> list[str]:
        with self._lock:
            return list(reversed(self._recent))

    # -- /oauth2/authorize ----------------------------------------------------------
    def authorize(self, method: str, fields: dict[str, Any]) -> Reply:
        params = {name: _one(fields, name) for name in AUTHORIZE_PARAMS}
        if params["client_id"] != self.client_id:
            return 400, self._page(params, "unknown client_id", form=False)
        if not loopback_url(params["redirect_uri"]):
            return 400, self._page(params, "redirect_uri must be a loopback http(s) URL",
                                   form=False)
        problem = self._request_problem(params)
        if problem:
            return self._redirect(params, {"error": "invalid_request",
                                           "error_description": problem})
        if method != "POST":
            return 200, self._page(params)
        sub = (_one(fields, "pick") or _one(fields, "sub")).strip()  # a picked user wins
        if not valid_user_id(sub):
            return 400, self._page(params, "a user id is 6-128 letters, digits, '_' or '-', "
                                           "starting with a letter or digit")
        code = secrets.token_urlsafe(32)
        grant = Grant(sub=sub, client_id=params["client_id"], auth_time=int(self._clock()),
                      redirect_uri=params["redirect_uri"],
                      code_challenge=params["code_challenge"], nonce=params["nonce"],
                      expires_at=self._clock() + CODE_TTL_SECONDS)
        self._keep(self._codes, code, grant)
        self.saw_user(sub)
        return self._redirect(params, {"code": code})

    @staticmethod
    def _request_problem(params: dict[str, str]) -> str:
        if params["response_type"] != "code":
            return "response_type must be code"
        if params["code_challenge_method"] != "S256" or len(params["code_challenge"]) < 43:
            return "PKCE is required: code_challenge with code_challenge_method=S256"
        if "openid" not in params["scope"].split():
            return "scope must include openid"
        return ""

    @staticmethod
    def _redirect(params: dict[str, str], answer: dict[str, str]) -> Reply:
        query = {**answer, **({"state": params["state"]} if params["state"] else {})}
        sep = "&" if urlsplit(params["redirect_uri"]).query else "?"
        location = f"{params['redirect_uri']}{sep}{urlencode(query)}"
        return 302, RawReply(b"", "text/plain", {"Location": location,
                                                 "Cache-Control": "no-store"})

    # -- /oauth2/token --------------------------------------------------------------
    def token(self, fields: dict[str, Any]) -> Reply:
        grant_type = _one(fields, "grant_type")
        if _one(fields, "client_id") != self.client_id:
            return _token_error("invalid_client", "unknown client_id", 401)
        if grant_type == "authorization_code":
            return self._code_grant(fields)
        if grant_type == "refresh_token":
            with self._lock:
                grant = self._refresh.get(_one(fields, "refresh_token"))
            if grant is None or grant.client_id != self.client_id:
                return _token_error("invalid_grant", "unknown or revoked refresh token")
            return self._tokens(grant, _one(fields, "refresh_token"))
        return _token_error("unsupported_grant_type",
                            "grant_type must be authorization_code or refresh_token")

    def _code_grant(self, fields: dict[str, Any]) -> Reply:
        with self._lock:
            grant = self._codes.pop(_one(fields, "code"), None)  # a code works once
        if grant is None or grant.expires_at < self._clock():
            return _token_error("invalid_grant", "unknown, used or expired code")
        if grant.redirect_uri != _one(fields, "redirect_uri"):
            return _token_error("invalid_grant", "redirect_uri differs from the authorize request")
        if not secrets.compare_digest(s256(_one(fields, "code_verifier")), grant.code_challenge):
            return _token_error("invalid_grant", "code_verifier does not match code_challenge")
        refresh_token = secrets.token_urlsafe(32)
        self._keep(self._refresh, refresh_token, grant)
        return self._tokens(grant, refresh_token)

    def _tokens(self, grant: Grant, refresh_token: str) -> Reply:
        # auth_time stays the sign-in's: relying parties check it is unchanged on refresh.
        claims: dict[str, Any] = {"auth_time": grant.auth_time}
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = self._mint(grant.sub, claims)
        access_token = self._mint(grant.sub, {"auth_time": grant.auth_time, "token_use": "access",
                                              "client_id": grant.client_id, "scope": "openid"})
        return 200, {"id_token": id_token, "access_token": access_token,
                     "refresh_token": refresh_token, "token_type": "Bearer",
                     "expires_in": self._ttl, "scope": "openid"}

    def _keep(self, table: OrderedDict[str, Grant], key: str, grant: Grant) -> None:
        with self._lock:
            table[key] = grant
            while len(table) > MAX_PENDING:
                table.popitem(last=False)

    # -- the sign-in page -----------------------------------------------------------
    def _page(self, params: dict[str, str], problem: str = "", *, form: bool = True) -> RawReply:
        esc = html.escape
        hidden = "".join(f'<input type="hidden" name="{name}" value="{esc(value)}">'
                         for name, value in params.items() if value)
        picks = "".join(
            f'<li><button type="submit" name="pick" value="{esc(sub)}" data-testid="signin-pick"'
            f' data-sub="{esc(sub)}">{esc(sub)}</button></li>' for sub in self.recent_users())
        error = f'<p role="alert" class="error">{esc(problem)}</p>' if problem else ""
        body = "" if not form else (
            f'<form method="post" action="/oauth2/authorize" data-testid="signin-form">{hidden}'
            '<label for="sub">User id (sub)</label> '
            '<input id="sub" name="sub" data-testid="signin-user" autocomplete="off" autofocus'
            ' size="40">'
            ' <button type="submit" data-testid="signin-submit">Sign in</button>'
            + (f"<p>Or pick a recent user:</p><ul>{picks}</ul>" if picks else "") + "</form>")
        page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<title>Sign in (local OIDC issuer)</title><link rel=\"icon\" href=\"data:,\">"
                "<style>body{font:16px system-ui;"
                "max-width:36rem;margin:2rem auto}.error{color:#b00}li{margin:.3rem 0}"
                "</style></head><body><h1>Sign in</h1>"
                "<p>Local stand-in for the Cognito hosted sign-in: no password.</p>"
                f"{error}{body}</body></html>")
        return RawReply(page.encode())

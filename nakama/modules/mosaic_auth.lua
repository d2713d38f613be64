--[[
Custom-id logins need a Cognito ID token proving that custom id (docs/security.md).

A client calls AuthenticateCustom with the Cognito sub as the id and its ID token in
vars.id_token:

  POST /v2/account/authenticate/custom  {"id": "<sub>", "vars": {"id_token": "<JWT>"}}

This before-hook asks the auth hook service (producers/authhook.py) to verify the token
(RS256 against the user pool's JWKS, issuer, audience, token_use=id, expiry) and that its
sub equals the id; anything else refuses the login with UNAUTHENTICATED (HTTP 401). The
token is removed from vars before Nakama continues, so it never lands in the session
token. The call is HMAC-signed like the ingress calls (mosaic_signing.lua: key id, empty
query), with its own key: runtime env mosaic_auth_url, mosaic_auth_hmac_key and
mosaic_auth_hmac_key_id. The hook's 200 counts only with a valid answer signature (the same
key, bound to this request's nonce and custom id): whatever else answers 200 on that URL,
or replays an old answer, does not log anyone in.

SessionRefresh is refused once the login it descends from is older than runtime env
mosaic_session_max_lifetime_sec (Nakama keeps the login's iat across refreshes).

LinkCustom gets the same check (otherwise an account from another login method could
claim someone's sub); every other authenticate and link method is refused: the Cognito
sub is the only identity. Server-to-server calls (http_key) and runtime functions
(nk.authenticate_custom) do not pass through these hooks.
]]

local nk = require("nakama")
local signing = require("mosaic_signing")

local PATH = "/auth/v1/custom"
local TIMEOUT_MS = 5000
local INTERNAL, UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED = 13, 14, 16, 7

local function signed_answer(key, nonce, custom_id, answer)
  local ok, decoded = pcall(nk.json_decode, answer or "")
  if not ok or type(decoded) ~= "table" or decoded.ok ~= true then
    return false
  end
  return signing.same(decoded.signature, signing.answer_signature(key, nonce, custom_id))
end

local function verify(context, custom_id, id_token)
  local env = context.env or {}
  local url = env["mosaic_auth_url"]
  local key = signing.key_from_env(env, "mosaic_auth_hmac_key", "mosaic_auth_hmac_key_id")
  if url == nil or url == "" or key == nil then
    nk.logger_error("mosaic_auth: mosaic_auth_url / mosaic_auth_hmac_key / "
      .. "mosaic_auth_hmac_key_id not set (or the key id is malformed)")
    error({ "login is not available", UNAVAILABLE })
  end
  local body = nk.json_encode({ custom_id = custom_id, id_token = id_token })
  local headers = signing.headers(key, "POST", PATH, "", body)
  local ok, status, _, answer = pcall(nk.http_request, url .. PATH, "POST", headers, body,
    TIMEOUT_MS)
  if not ok then
    nk.logger_warn("mosaic_auth: auth hook unreachable")
    error({ "login is temporarily unavailable", UNAVAILABLE })
  end
  if status == 200 then
    if signed_answer(key, headers["X-Mosaic-Nonce"], custom_id, answer) then
      return
    end
    -- Not from the hook (or replayed): whoever answered does not hold the hook key.
    nk.logger_error("mosaic_auth: the auth hook's 200 carries no valid answer signature")
    error({ "login is temporarily unavailable", INTERNAL })
  end
  if status == 403 then
    error({ "invalid identity token", UNAUTHENTICATED })
  end
  if status == 503 then
    error({ "login is temporarily unavailable", UNAVAILABLE })
  end
  -- 401 means the shared key or the clock is wrong: an operator problem, not the user's.
  nk.logger_error(string.format("mosaic_auth: auth hook answered %d", status))
  error({ "login is temporarily unavailable", INTERNAL })
end

-- Checks payload.account (AuthenticateCustom) or payload (LinkCustom: an AccountCustom).
local function checked(context, account)
  if type(account) ~= "table" or type(account.id) ~= "string" or account.id == "" then
    error({ "a custom id is required", UNAUTHENTICATED })
  end
  local vars = account.vars
  local token = nil
  if type(vars) == "table" then
    token = vars.id_token
    vars.id_token = nil -- never into the session token
  end
  if type(token) ~= "string" or token == "" then
    error({ "an identity token is required (vars.id_token)", UNAUTHENTICATED })
  end
  verify(context, account.id, token)
end

local function before_authenticate_custom(context, payload)
  checked(context, payload.account)
  return payload
end

local function before_link_custom(context, payload)
  checked(context, payload)
  return payload
end

-- iat of a Nakama refresh token: the time of the login it descends from (Nakama keeps it
-- across refreshes). Read unverified: Nakama checks the signature right after this hook,
-- and a token whose claims were changed fails there.
local function login_time(token)
  local part = type(token) == "string" and string.match(token, "^[^.]+%.([^.]+)%.[^.]+$")
  if not part then
    return nil
  end
  local ok, claims = pcall(function()
    return nk.json_decode(nk.base64url_decode(part))
  end)
  if not ok or type(claims) ~= "table" then
    return nil
  end
  return tonumber(claims.iat)
end

-- A refresh token would otherwise slide forever: refuse a refresh once the session's first
-- login is mosaic_session_max_lifetime_sec old, so that a user disabled in Cognito is out
-- after at most that plus one session token's lifetime. vars stay those of the login.
local function before_session_refresh(context, payload)
  local max_lifetime = tonumber((context.env or {})["mosaic_session_max_lifetime_sec"])
  if max_lifetime == nil or max_lifetime <= 0 then
    nk.logger_error("mosaic_auth: runtime env mosaic_session_max_lifetime_sec is not set")
    error({ "session refresh is not available: log in again", UNAVAILABLE })
  end
  local issued = login_time(payload and payload.token)
  if issued == nil or nk.time() / 1000 - issued >= max_lifetime then
    error({ "session expired: log in again", UNAUTHENTICATED })
  end
  payload.vars = nil
  return payload
end

local function refuse(_context, _payload)
  error({ "this login method is disabled: log in with your Cognito identity", PERMISSION_DENIED })
end

nk.register_req_before(before_authenticate_custom, "AuthenticateCustom")
nk.register_req_before(before_link_custom, "LinkCustom")
nk.register_req_before(before_session_refresh, "SessionRefresh")
for _, name in ipairs({ "AuthenticateApple", "AuthenticateDevice", "AuthenticateEmail",
  "AuthenticateFacebook", "AuthenticateFacebookInstantGame", "AuthenticateGameCenter",
  "AuthenticateGoogle", "AuthenticateSteam", "LinkApple", "LinkDevice", "LinkEmail",
  "LinkFacebook", "LinkFacebookInstantGame", "LinkGameCenter", "LinkGoogle", "LinkSteam" }) do
  nk.register_req_before(refuse, name)
end

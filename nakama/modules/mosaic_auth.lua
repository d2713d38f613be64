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
mosaic_auth_hmac_key_id.

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
  local ok, status = pcall(nk.http_request, url .. PATH, "POST",
    signing.headers(key, "POST", PATH, "", body), body, TIMEOUT_MS)
  if not ok then
    nk.logger_warn("mosaic_auth: auth hook unreachable")
    error({ "login is temporarily unavailable", UNAVAILABLE })
  end
  if status == 200 then
    return
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

local function refuse(_context, _payload)
  error({ "this login method is disabled: log in with your Cognito identity", PERMISSION_DENIED })
end

nk.register_req_before(before_authenticate_custom, "AuthenticateCustom")
nk.register_req_before(before_link_custom, "LinkCustom")
for _, name in ipairs({ "AuthenticateApple", "AuthenticateDevice", "AuthenticateEmail",
  "AuthenticateFacebook", "AuthenticateFacebookInstantGame", "AuthenticateGameCenter",
  "AuthenticateGoogle", "AuthenticateSteam", "LinkApple", "LinkDevice", "LinkEmail",
  "LinkFacebook", "LinkFacebookInstantGame", "LinkGameCenter", "LinkGoogle", "LinkSteam" }) do
  nk.register_req_before(refuse, name)
end

--[[
Client RPCs for matching (called with a user session):

  rpc_opt_in_match          {top_chats?, force_refresh?, pool?, request_id?} -> {accepted, request_id, duplicate}
  rpc_opt_out_match         {pool?, request_id?}                             -> {accepted, request_id, duplicate}
  rpc_get_user_match_status {}                                               -> {state, ...} (STATUS_FIELDS)
  rpc_block_user            {user_id | global_user_id, request_id?}          -> {blocked}

The caller is always the session's account: its custom id (the Cognito sub, GlobalUserID)
is looked up from ctx.user_id; a user id in the payload is never trusted for the caller.
Each RPC calls the ingress over HTTP, signed with HMAC-SHA256 over
METHOD\nPATH\nCANONICAL_QUERY\nKEY_ID\nTIMESTAMP\nNONCE\nSHA256_HEX(BODY)
(mosaic_signing.lua; producers/signing.py checks the same string). The ingress URL, key and
key id come from the runtime env (mosaic_ingress_url, mosaic_ingress_hmac_key,
mosaic_ingress_hmac_key_id). A block is confidential: nothing is sent to the blocked user.

Server to server only (http_key): mosaic_signing_canonical_query {params: [[name, value]...]}
-> {query}, the canonical query this runtime signs (tests compare it with producers/signing.py).

Errors use gRPC codes: 3 invalid, 8 rate limited, 14 unavailable, 16 no session.
]]

local nk = require("nakama")
local signing = require("mosaic_signing")

local TIMEOUT_MS = 15000
local ID_PATTERN = "^[%w_%-]+$"
local INVALID, NOT_FOUND, RATE_LIMITED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 3, 5, 8, 13, 14, 16
local PERMISSION_DENIED = 7

local function settings(context)
  local env = context.env or {}
  local url = env["mosaic_ingress_url"]
  local key = signing.key_from_env(env, "mosaic_ingress_hmac_key", "mosaic_ingress_hmac_key_id")
  if url == nil or url == "" or key == nil then
    nk.logger_error("mosaic_match: mosaic_ingress_url / mosaic_ingress_hmac_key / "
      .. "mosaic_ingress_hmac_key_id not set (or the key id is malformed)")
    error({ "matching is not available", UNAVAILABLE })
  end
  return url, key
end

local function custom_id_of(user_id)
  local ok, account = pcall(nk.account_get_id, user_id)
  if not ok or account == nil then
    return nil
  end
  return account.custom_id
end

-- The caller's GlobalUserID, from the session only.
local function caller(context)
  if context.user_id == nil or context.user_id == "" then
    error({ "a user session is required", UNAUTHENTICATED })
  end
  local id = custom_id_of(context.user_id)
  if id == nil or id == "" or not string.match(id, ID_PATTERN) then
    error({ "this account has no matching identity", INVALID })
  end
  return id
end

local function decode(payload)
  if payload == nil or payload == "" then
    return {}
  end
  local ok, body = pcall(nk.json_decode, payload)
  if not ok or type(body) ~= "table" then
    error({ "payload must be a JSON object", INVALID })
  end
  return body
end

local function request_id(body)
  local rid = body.request_id
  if rid == nil then
    return (string.gsub(nk.uuid_v4(), "-", ""))
  end
  if type(rid) ~= "string" or not string.match(rid, ID_PATTERN) then
    error({ "request_id must be 8-64 letters, digits, '_' or '-'", INVALID })
  end
  return rid
end

local function answer_error(status, headers, answer)
  local retry = (headers or {})["Retry-After"]
  local hint = ""
  if retry ~= nil then
    hint = " (retry after " .. retry .. " s)"
  end
  if status == 429 then
    error({ "too many requests" .. hint, RATE_LIMITED })
  elseif status == 400 or status == 409 or status == 413 or status == 422 then
    error({ "invalid request: " .. tostring(answer.message or status), INVALID })
  elseif status == 503 then
    error({ "matching is temporarily unavailable" .. hint, UNAVAILABLE })
  end
  -- 401 means the shared key or the clock is wrong: an operator problem, not the user's.
  nk.logger_error(string.format("mosaic_match: ingress answered %d", status))
  error({ "matching is temporarily unavailable", INTERNAL })
end

-- params: optional list of {name, value} query parameters (signed with the rest).
local function call_ingress(context, method, path, body_table, params)
  local url, key = settings(context)
  local body = ""
  if body_table ~= nil then
    body = nk.json_encode(body_table)
  end
  local query = signing.canonical_query(params)
  local headers = signing.headers(key, method, path, query, body)
  local ok, status, resp_headers, resp_body = pcall(nk.http_request,
    signing.url(url, path, query), method, headers, body, TIMEOUT_MS)
  if not ok then
    nk.logger_warn("mosaic_match: ingress unreachable")
    error({ "matching is temporarily unavailable", UNAVAILABLE })
  end
  local decoded_ok, answer = pcall(nk.json_decode, resp_body or "")
  if not decoded_ok or type(answer) ~= "table" then
    answer = {}
  end
  if status == 200 or status == 202 then
    return answer
  end
  answer_error(status, resp_headers, answer)
end

local function accepted(answer)
  return nk.json_encode({
    accepted = true, request_id = answer.request_id, duplicate = answer.duplicate == true,
  })
end

local function rpc_opt_in_match(context, payload)
  local me, body = caller(context), decode(payload)
  local answer = call_ingress(context, "POST", "/user/" .. me .. "/opt-in-embedding", {
    request_id = request_id(body), top_chats = body.top_chats,
    force_refresh = body.force_refresh, pool = body.pool,
  })
  return accepted(answer)
end

local function rpc_opt_out_match(context, payload)
  local me, body = caller(context), decode(payload)
  local answer = call_ingress(context, "POST", "/user/" .. me .. "/opt-out", {
    request_id = request_id(body), pool = body.pool,
  })
  return accepted(answer)
end

-- The status answer's fields, and only these: a field the ingress might add (or a raw
-- cause such as a parse error naming other users) never reaches the client unreviewed.
-- user_id is left out: the client knows who it is.
local STATUS_FIELDS = {
  "state", "opted_in_at", "waiting_since", "missed_cycles", "cycle_id", "room_id", "pool",
  "updated_at", "last_cycle_id", "unmatched_reason", "reason_code", "message",
}

local function rpc_get_user_match_status(context, _payload)
  local me = caller(context)
  local answer = call_ingress(context, "GET", "/user/" .. me .. "/status", nil)
  local status = {}
  for _, name in ipairs(STATUS_FIELDS) do
    status[name] = answer[name]
  end
  return nk.json_encode(status)
end

-- The blocked user, as a GlobalUserID: from a Nakama user id or given directly.
local function block_target(body)
  if type(body.user_id) == "string" and body.user_id ~= "" then
    local id = custom_id_of(body.user_id)
    if id == nil or id == "" then
      error({ "unknown user", NOT_FOUND })
    end
    return id
  end
  if type(body.global_user_id) == "string" and string.match(body.global_user_id, ID_PATTERN) then
    return body.global_user_id
  end
  error({ "user_id or global_user_id is required", INVALID })
end

local function rpc_block_user(context, payload)
  local me, body = caller(context), decode(payload)
  local target = block_target(body)
  if target == me then
    error({ "you cannot block yourself", INVALID })
  end
  call_ingress(context, "POST", "/user/" .. me .. "/block", {
    request_id = request_id(body), blocked_user_id = target,
  })
  return nk.json_encode({ blocked = true })
end

-- Server to server only: the canonical query of the given pairs (no key, no secret involved).
local function rpc_signing_canonical_query(context, payload)
  if context.user_id ~= nil and context.user_id ~= "" then
    error({ "server to server only", PERMISSION_DENIED })
  end
  local body = decode(payload)
  local params = {}
  for _, pair in ipairs(body.params or {}) do
    if type(pair) ~= "table" or type(pair[1]) ~= "string" or type(pair[2]) ~= "string" then
      error({ "params must be [[name, value], ...] strings", INVALID })
    end
    params[#params + 1] = { pair[1], pair[2] }
  end
  return nk.json_encode({ query = signing.canonical_query(params) })
end

nk.register_rpc(rpc_signing_canonical_query, "mosaic_signing_canonical_query")
nk.register_rpc(rpc_opt_in_match, "rpc_opt_in_match")
nk.register_rpc(rpc_opt_out_match, "rpc_opt_out_match")
nk.register_rpc(rpc_get_user_match_status, "rpc_get_user_match_status")
nk.register_rpc(rpc_block_user, "rpc_block_user")

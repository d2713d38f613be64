--[[
HMAC-SHA256 request signing shared by mosaic_match.lua (-> ingress) and mosaic_auth.lua
(-> auth hook). producers/signing.py builds and checks the same string:

  METHOD \n PATH \n CANONICAL_QUERY \n KEY_ID \n TIMESTAMP \n NONCE \n SHA256_HEX(BODY)

CANONICAL_QUERY: each parameter name and value percent-encoded (UTF-8 bytes; only
A-Z a-z 0-9 - . _ ~ stay literal; upper-case hex), pairs sorted by encoded name then encoded
value (byte order), joined name=value with "&"; empty without parameters. It is also the
query string sent, so what is signed is exactly what the server reads.

KEY_ID (X-Mosaic-Key-Id) names the key: the servers accept a few keys by id while a key is
being rotated (docs/security.md). The key and its id come from the runtime env.
]]

local nk = require("nakama")

local M = {}

local EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local KEY_ID_PATTERN = "^[A-Za-z0-9_.%-]+$"
local MAX_KEY_ID = 64

local function encode(text)
  return (string.gsub(text, "[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

-- params: a list of {name, value} pairs (plain, not encoded). Returns the canonical query,
-- which is also the query string to send.
function M.canonical_query(params)
  local encoded = {}
  for _, pair in ipairs(params or {}) do
    encoded[#encoded + 1] = { encode(tostring(pair[1])), encode(tostring(pair[2] or "")) }
  end
  table.sort(encoded, function(a, b)
    if a[1] ~= b[1] then
      return a[1] < b[1]
    end
    return a[2] < b[2]
  end)
  local parts = {}
  for i, pair in ipairs(encoded) do
    parts[i] = pair[1] .. "=" .. pair[2]
  end
  return table.concat(parts, "&")
end

-- The signing key {id, secret} from the runtime env, or nil when either value is missing
-- or the id is malformed (the caller logs it by name and refuses).
function M.key_from_env(env, secret_name, id_name)
  local secret, id = (env or {})[secret_name], (env or {})[id_name]
  if type(secret) ~= "string" or secret == "" or type(id) ~= "string" or #id > MAX_KEY_ID
    or not string.match(id, KEY_ID_PATTERN) then
    return nil
  end
  return { id = id, secret = secret }
end

-- Headers for one request. query: the canonical query (M.canonical_query), "" for none.
function M.headers(key, method, path, query, body)
  local ts = tostring(math.floor(nk.time() / 1000))
  local nonce = (string.gsub(nk.uuid_v4(), "-", ""))
  local digest = EMPTY_SHA256
  if body ~= "" then
    digest = nk.sha256_hash(body)
  end
  local canonical = table.concat({ method, path, query, key.id, ts, nonce, digest }, "\n")
  return {
    ["Content-Type"] = "application/json",
    ["X-Mosaic-Key-Id"] = key.id,
    ["X-Mosaic-Timestamp"] = ts,
    ["X-Mosaic-Nonce"] = nonce,
    ["X-Mosaic-Signature"] = nk.base16_encode(nk.hmac_sha256_hash(canonical, key.secret)),
  }
end

-- The auth hook's answer to one request is signed with the request's key, bound to its
-- nonce and custom id (producers/authhook.py, answer_signature): an answer from anything
-- else than the hook, or one replayed from another request, does not verify.
--   "mosaic-auth-answer" \n KEY_ID \n NONCE \n CUSTOM_ID \n "ok"
function M.answer_signature(key, nonce, custom_id)
  local text = table.concat({ "mosaic-auth-answer", key.id, nonce, custom_id, "ok" }, "\n")
  return nk.base16_encode(nk.hmac_sha256_hash(text, key.secret))
end

-- Equal strings, comparing every byte whatever the first difference.
function M.same(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then
    return false
  end
  local diff = 0
  for i = 1, #a do
    if string.byte(a, i) ~= string.byte(b, i) then
      diff = diff + 1
    end
  end
  return diff == 0
end

-- base .. path, plus "?" .. query when there is one.
function M.url(base, path, query)
  if query == nil or query == "" then
    return base .. path
  end
  return base .. path .. "?" .. query
end

return M

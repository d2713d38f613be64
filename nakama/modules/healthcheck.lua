--[[
Health check RPC for the local stack (stack/nakama.py polls it).

  mosaic_ping -> {"ok":true,"user_id":<caller's user id or null>,"time_ms":<server ms>}

It makes one round trip to the database first, so a Nakama whose PostgreSQL is gone
answers with an error instead of "ok". A Lua table cannot hold nil, so the JSON object
is assembled from encoded parts to keep an explicit "user_id":null for server-to-server
calls (?http_key=...).
]]

local nk = require("nakama")

local function mosaic_ping(context, _payload)
  nk.sql_query("SELECT 1")  -- raises (RPC error) when the database does not answer
  local user_id = "null"
  if context.user_id ~= nil and context.user_id ~= "" then
    user_id = nk.json_encode(context.user_id)
  end
  return '{"ok":true,"user_id":' .. user_id .. ',"time_ms":' .. nk.json_encode(nk.time()) .. '}'
end

nk.register_rpc(mosaic_ping, "mosaic_ping")

--[[
Server-to-server RPCs for post-match side effects (called with the runtime http_key,
never by a game client):

  mosaic_create_room   {cycle_id, pair_key, user_a, user_b} -> {group_id, created}
  mosaic_notify_match  {cycle_id, pair_key, user, partner, group_id} -> {sent, duplicate}

User ids in payloads are custom ids (the Cognito sub). Both RPCs are idempotent:
- the group name is built from the cycle and the pair, and Nakama group names are unique;
  the partner joins an open group that is then closed, so Nakama sends no system
  "added to group" notification (group_users_add would) and the match notification
  stays the only one;
- a notification is claimed by a create-only storage write (version "*") before it is
  sent, so a retried call never sends a second one.
]]

local nk = require("nakama")

local NOTIFY_CODE = 101          -- > 0: application notification code for "match found"
local CLAIMS = "mosaic_notified" -- storage collection holding one claim per user and pair

local function server_only(context)
  if context.user_id ~= nil and context.user_id ~= "" then
    error({ "server-to-server RPC: call it with the runtime http_key", 7 })
  end
end

local function decode(payload, fields)
  local ok, body = pcall(nk.json_decode, payload or "")
  if not ok or type(body) ~= "table" then
    error({ "payload must be a JSON object", 3 })
  end
  for _, f in ipairs(fields) do
    if type(body[f]) ~= "string" or body[f] == "" then
      error({ "missing or invalid field: " .. f, 3 })
    end
  end
  return body
end

local function resolve(custom_id)
  local ok, user_id, username = pcall(nk.authenticate_custom, custom_id, nil, false)
  if not ok then
    error({ "unknown user: " .. custom_id, 5 })
  end
  return user_id, username
end

local function room_name(cycle_id, pair_key)
  return "mm:" .. cycle_id .. ":" .. pair_key
end

local function find_group(name)
  local groups = nk.groups_list(name, nil, nil, nil, 1)
  for _, g in ipairs(groups or {}) do
    if g.name == name then
      return g
    end
  end
  return nil
end

local function is_member(group_id, user_id)
  local members = nk.group_users_list(group_id, 10)
  for _, m in ipairs(members or {}) do
    if m.user.user_id == user_id and m.state <= 2 then
      return true
    end
  end
  return false
end

local function create_room(context, payload)
  server_only(context)
  local body = decode(payload, { "cycle_id", "pair_key", "user_a", "user_b" })
  local a_id = resolve(body.user_a)
  local b_id, b_name = resolve(body.user_b)
  local name = room_name(body.cycle_id, body.pair_key)
  local created = false
  local group = find_group(name)
  if group == nil then
    local meta = { cycle_id = body.cycle_id, pair_key = body.pair_key, kind = "mosaic_match" }
    local ok, g = pcall(nk.group_create, a_id, name, a_id, "", "Mosaic Match", "", true, meta, 2)
    if ok then
      group, created = g, true
    else
      group = find_group(name) -- lost a race with a concurrent retry
      if group == nil then
        error({ "could not create group: " .. tostring(g), 13 })
      end
    end
  end
  if not is_member(group.id, b_id) then
    nk.group_user_join(group.id, b_id, b_name)
  end
  -- Close the group: a private room for exactly these two users.
  nk.group_update(group.id, nil, nil, nil, nil, nil, nil, false)
  return nk.json_encode({ group_id = group.id, created = created, name = name })
end

local function notify_match(context, payload)
  server_only(context)
  local body = decode(payload, { "cycle_id", "pair_key", "user", "partner", "group_id" })
  local user_id = resolve(body.user)
  local claim = {
    collection = CLAIMS,
    key = nk.sha256_hash(body.cycle_id .. "/" .. body.pair_key),
    user_id = user_id,
    value = { cycle_id = body.cycle_id, pair_key = body.pair_key, group_id = body.group_id },
    version = "*", -- create only: fails when this user was already notified for this pair
    permission_read = 1,
    permission_write = 0,
  }
  local ok = pcall(nk.storage_write, { claim })
  if not ok then
    return nk.json_encode({ sent = false, duplicate = true })
  end
  local content = {
    cycle_id = body.cycle_id,
    pair_key = body.pair_key,
    partner_id = body.partner,
    group_id = body.group_id,
  }
  local sent, err = pcall(nk.notification_send, user_id, "You have a new match", content,
    NOTIFY_CODE, nil, true)
  if not sent then
    -- Release the claim so a retry can send it; otherwise the user would never hear.
    pcall(nk.storage_delete, { { collection = CLAIMS, key = claim.key, user_id = user_id } })
    error({ "could not send notification: " .. tostring(err), 14 })
  end
  return nk.json_encode({ sent = true, duplicate = false })
end

nk.register_rpc(create_room, "mosaic_create_room")
nk.register_rpc(notify_match, "mosaic_notify_match")

--[[
Post-match side effects in batches: server-to-server RPCs (runtime http_key only; a call
with a user session is refused with PERMISSION_DENIED); the client-API hooks that keep
the rooms private are in mosaic_privacy.lua. User ids in payloads are custom ids (Cognito subs); they never leave
this module: not in group names, metadata, descriptions or notification content.

  mosaic_create_rooms   {"rooms": [{cycle_id, pair_key, user_a, user_b}, ...1..500]}
    -> {"results": [{pair_key, cycle_id, ok=true, group_id, channel_id, created}
                    | {pair_key, cycle_id, ok=false, permanent, error}, ...]}
  mosaic_notify_matches {"notifications": [{cycle_id, pair_key, user, partner, group_id,
                                            channel_id}, ...1..1000]}
    -> {"results": [{pair_key, user, ok=true, sent} | {pair_key, user, ok=false,
                    permanent, error}, ...]}

Results are in input order; each item runs under its own pcall, so one bad item never
fails the others. permanent=true: the user (or partner) does not exist or is banned
(users.disable_time is set), or the item can never succeed; everything else is
retryable. A malformed payload as a whole fails the call with INVALID_ARGUMENT (3).

Rooms. The group name is "mm-" .. hex(HMAC-SHA256(runtime env mosaic_room_name_key,
cycle_id \n pair_key))[1..40]: opaque, unique per pair and cycle, 43 chars; keyed, so
whoever knows two subs cannot confirm that they were paired. Nakama group names are unique (groups_name_key), so a
retry finds the group (one query for the whole batch, members included) and only does
what is missing. A retry also looks under the pair's older names: keyed with a previous
key (mosaic_room_name_previous_keys, during a rotation) and the unkeyed
"mm-" .. hex(sha256(cycle_id \n pair_key))[1..40] of rooms created before names were
keyed; a room found there is the pair's room (never a second one under the new name).
New rooms of a batch are written in ONE statement, closed from the start, recorded in
mosaic_room_done (mosaic_room_batch.lua). The rest (an interrupted creation, a name taken
meanwhile, or every pair when that statement fails) goes through the runtime: user_a
creates the group open with max_count=2, user_b joins (group_user_join: no "added to
group" notification, which group_users_add would send), then the group is closed. The
window while it is open is
covered by the before-hooks in mosaic_privacy.lua, which refuse every client request that
could add a member, open the group, or squat an "mm-" name (runtime calls are not hooked).
A room is completed once: closing it records its name in mosaic_room_done (a trigger on
groups, same transaction; mosaic_once.lua). A completed room is never reopened,
re-joined or re-created: a member missing from it left, and when both left Nakama
deleted the group, so a replay answers ok with the recorded group id and adds nobody.
Only an open room (a creation that was interrupted) gets its missing members.

Notifications: exactly one per user and pair, ever, without a claim. Each notification
carries content.mosaic_key = sha256(cycle_id \n pair_key \n user)[1..40], and a UNIQUE
partial expression index on Nakama's notification table (mosaic_notification_once)
makes a second stored row with the same key impossible. A user may delete it, so the key
is also written to mosaic_notification_sent by a trigger on notification, in the INSERT's
own transaction; its primary key refuses the key a second time, and that row outlives the
notification (it goes only with the user). Index, table and triggers (mosaic_once.lua) are
created at load and checked, recreated if missing, before every batch. Per batch: one query finds the
keys sent before (-> sent=false, also when the user deleted the notification); the rest
go in ONE notifications_send (one multi-row INSERT: all or nothing). If it fails (a
concurrent sender hit the index or the key, a database error, one bad row), the keys are
queried again and the still-missing ones sent one by one; the answer is then read from
mosaic_notification_sent: a recorded key is delivered (sent=true if this call's insert
stored it, else sent=false), a missing key is ok=false permanent=false. Success is never
reported for a key that is not recorded, and a failed send leaves nothing behind,
so a retry sends it. The old design (create-only storage claim, then send) lost the
notification when the claim write failed (read as "duplicate") or Nakama died between
claim and send.
]]

local nk = require("nakama")
local privacy = require("mosaic_privacy") -- the client-API hooks that keep rooms private
local once = require("mosaic_once") -- what a replay must never undo
local room_batch = require("mosaic_room_batch") -- new rooms in one statement

local NOTIFY_CODE = once.NOTIFY_CODE
local NOTIFY_SUBJECT = "You have a new match"
local KIND, NAME_PREFIX = privacy.KIND, privacy.NAME_PREFIX
local MAX_ROOMS = 500
local MAX_NOTIFICATIONS = 1000
local GROUP_CHANNEL = 3 -- rtapi.ChannelJoin_GROUP

local INVALID_ARGUMENT, PERMISSION_DENIED, INTERNAL, UNAVAILABLE = 3, 7, 13, 14

-- Per-item failure that can never succeed (vs. a Lua error, which is retryable).
local Permanent = {}
Permanent.__index = Permanent
local function permanent(msg)
  return setmetatable({ msg = msg }, Permanent)
end

local function server_only(context)
  if context.user_id ~= nil and context.user_id ~= "" then
    error({ "server-to-server RPC: call it with the runtime http_key", PERMISSION_DENIED })
  end
end

local function decode_batch(payload, list_field, max_items, fields)
  local ok, body = pcall(nk.json_decode, payload or "")
  if not ok or type(body) ~= "table" then
    error({ "payload must be a JSON object", INVALID_ARGUMENT })
  end
  local items = body[list_field]
  if type(items) ~= "table" or #items < 1 or #items > max_items then
    error({ list_field .. " must be a list of 1.." .. max_items .. " items", INVALID_ARGUMENT })
  end
  for i, item in ipairs(items) do
    if type(item) ~= "table" then
      error({ list_field .. "[" .. i .. "] must be an object", INVALID_ARGUMENT })
    end
    for _, f in ipairs(fields) do
      if type(item[f]) ~= "string" or item[f] == "" then
        error({ list_field .. "[" .. i .. "]." .. f .. " is missing or not a string",
          INVALID_ARGUMENT })
      end
    end
  end
  return items
end

-- table.concat of a long list overflows the Lua registry (gopher-lua pushes every
-- element; Nakama's registry holds 512 values by default): join in small chunks.
local function join(list, sep)
  local parts, chunk = {}, {}
  for _, v in ipairs(list) do
    chunk[#chunk + 1] = v
    if #chunk == 64 then
      parts[#parts + 1] = table.concat(chunk, sep)
      chunk = {}
    end
  end
  if #chunk > 0 then
    parts[#parts + 1] = table.concat(chunk, sep)
  end
  return table.concat(parts, sep)
end

local function hex40(s)
  return string.sub(nk.sha256_hash(s), 1, 40)
end

-- Keyed: knowing two subs and a cycle id is not enough to confirm that they were paired.
local function room_name(name_key, cycle_id, pair_key)
  local mac = nk.base16_encode(nk.hmac_sha256_hash(cycle_id .. "\n" .. pair_key, name_key))
  return NAME_PREFIX .. string.sub(mac, 1, 40)
end

-- The current key, then the previous ones (runtime env mosaic_room_name_previous_keys, a
-- JSON list of strings, set during a rotation).
local function room_name_keys(context)
  local env = context.env or {}
  local key = env["mosaic_room_name_key"]
  if type(key) ~= "string" or key == "" then
    nk.logger_error("mosaic_rooms: runtime env mosaic_room_name_key is not set")
    error({ "room names are not configured", UNAVAILABLE })
  end
  local keys, previous = { key }, env["mosaic_room_name_previous_keys"]
  if previous ~= nil and previous ~= "" then
    local ok, list = pcall(nk.json_decode, previous)
    if not ok or type(list) ~= "table" then
      nk.logger_error("mosaic_rooms: mosaic_room_name_previous_keys is not a JSON list")
      error({ "room names are not configured", UNAVAILABLE })
    end
    for _, k in ipairs(list) do
      if type(k) == "string" and k ~= "" then
        keys[#keys + 1] = k
      end
    end
  end
  return keys
end

-- Every name the pair's room may have: the current key's first, then the previous keys'
-- (created before a rotation), then the unkeyed one (created before names were keyed).
local function room_names(keys, cycle_id, pair_key)
  local names = {}
  for i, key in ipairs(keys) do
    names[i] = room_name(key, cycle_id, pair_key)
  end
  names[#names + 1] = NAME_PREFIX .. hex40(cycle_id .. "\n" .. pair_key)
  return names
end

-- The name the pair's room has (found or completed once), else the current one.
local function pick_name(names, groups, done)
  for _, name in ipairs(names) do
    if groups[name] ~= nil or done[name] ~= nil then
      return name
    end
  end
  return names[1]
end

local function mosaic_key(cycle_id, pair_key, user)
  return hex40(cycle_id .. "\n" .. pair_key .. "\n" .. user)
end

local function error_text(err)
  if type(err) == "table" then
    if getmetatable(err) == Permanent then
      return err.msg
    end
    return tostring(err[1] or err.msg or "error")
  end
  return tostring(err)
end

-- custom id -> {id, username, display_name, disabled} for every id in one query.
local function users_by_custom_id(custom_ids)
  local rows = nk.sql_query([[
SELECT id::text AS id, custom_id, username, coalesce(display_name, '') AS display_name,
       disable_time <> '1970-01-01 00:00:00+00' AS disabled
  FROM users
 WHERE custom_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))]],
    { nk.json_encode(custom_ids) })
  local found = {}
  for _, r in ipairs(rows) do
    found[r.custom_id] = r
  end
  return found
end

local function unique_values(items, fields)
  local seen, list = {}, {}
  for _, item in ipairs(items) do
    for _, f in ipairs(fields) do
      local v = item[f]
      if not seen[v] then
        seen[v] = true
        list[#list + 1] = v
      end
    end
  end
  return list
end

-- Error texts name the custom id: they go only to the server-side caller (for its
-- dead-letter reason), never to a user.
local function usable_user(user, role, custom_id)
  if user == nil then
    error(permanent(role .. " does not exist: " .. custom_id))
  end
  if user.disabled then
    error(permanent(role .. " is banned: " .. custom_id))
  end
  return user
end

-- ---------------------------------------------------------------------------------------
-- Rooms

-- name -> {id, creator_id, open, edge_count, kind, members = {user_id -> state}}
local function groups_by_name(names)
  local rows = nk.sql_query([[
SELECT g.id::text AS id, g.name, g.creator_id::text AS creator_id, g.state, g.edge_count,
       coalesce(g.metadata->>'kind', '') AS kind,
       coalesce((SELECT string_agg(e.destination_id::text || '=' || e.state, ',')
                   FROM group_edge e WHERE e.source_id = g.id), '') AS edges
  FROM groups g
 WHERE g.name = ANY(string_to_array($1, ','))]], { join(names, ",") })
  local found = {}
  for _, r in ipairs(rows) do
    local members = {}
    for uid, state in string.gmatch(r.edges, "([%x%-]+)=(%d+)") do
      members[uid] = tonumber(state)
    end
    found[r.name] = {
      id = r.id, creator_id = r.creator_id, open = (r.state == 0), edge_count = r.edge_count,
      kind = r.kind, members = members,
    }
  end
  return found
end

-- name -> group id of every room completed once (closed at least once), in one query.
local function done_rooms(names)
  local rows = nk.sql_query([[
SELECT name, group_id::text AS group_id
  FROM mosaic_room_done
 WHERE name = ANY(string_to_array($1, ','))]], { join(names, ",") })
  local found = {}
  for _, r in ipairs(rows) do
    found[r.name] = r.group_id
  end
  return found
end

local function room_answer(group_id, created)
  return {
    group_id = group_id,
    channel_id = nk.channel_id_build("", group_id, GROUP_CHANNEL),
    created = created,
  }
end

-- Adds the missing members of a room whose creation was interrupted (still open).
local function add_missing(group, name, a, b)
  for _, u in ipairs({ a, b }) do
    local state = group.members[u.id]
    if state == nil or state > 2 then
      local joined, err = pcall(nk.group_user_join, group.id, u.id, u.username)
      if not joined then
        -- A concurrent call for the same pair may have added the user (the group is
        -- then full, which is what the join reports): accept only what the table says.
        local now = groups_by_name({ name })[name]
        local now_state = now and now.members[u.id]
        if now_state == nil or now_state > 2 then
          error("could not add a member: " .. error_text(err))
        end
        group.open = now.open
      end
      group.members[u.id] = 2
    end
  end
end

local function create_one(item, users, groups, done, names)
  if item.user_a == item.user_b then
    error(permanent("a room needs two different users"))
  end
  local a = usable_user(users[item.user_a], "user_a", item.user_a)
  local b = usable_user(users[item.user_b], "user_b", item.user_b)
  local name = pick_name(names, groups, done)
  local group, created = groups[name], false
  if group == nil and done[name] ~= nil then
    -- Completed once, then every member left and Nakama deleted it: it stays gone.
    return room_answer(done[name], false)
  end
  if group == nil then
    local ok, g = pcall(nk.group_create, a.id, name, a.id, "en", "", "", true, { kind = KIND }, 2)
    if ok then
      group = { id = g.id, creator_id = a.id, open = true, edge_count = 1, kind = KIND,
        members = { [a.id] = 0 } }
      created = true
    else
      group = groups_by_name({ name })[name] -- lost a race with a concurrent call
      if group == nil then
        error("could not create group: " .. error_text(g))
      end
    end
    groups[name] = group -- a duplicate item later in the batch finds it
  end
  if group.kind ~= KIND then
    error(permanent("group name is taken by a group that is not a match room"))
  end
  for uid, state in pairs(group.members) do
    if uid ~= a.id and uid ~= b.id and state <= 3 then
      error(permanent("room has a member or join request outside the pair"))
    end
  end
  if done[name] ~= nil or not group.open then
    -- Completed once: whoever is missing left (or left and blocked). Never add them back.
    return room_answer(group.id, created)
  end
  add_missing(group, name, a, b)
  if group.open then
    nk.group_update(group.id, nil, nil, nil, nil, nil, nil, false)
    group.open = false
  end
  return room_answer(group.id, created)
end

-- The pairs whose room is new (no group under any of its names, never completed) go in
-- one statement (mosaic_room_batch.lua): item index -> group id. A name taken meanwhile is
-- read again for create_one; if the statement fails, every pair goes through create_one.
local function create_fresh(items, users, groups, done, names)
  local rooms, index_of = {}, {}
  for i, item in ipairs(items) do
    local a, b, name = users[item.user_a], users[item.user_b], pick_name(names[i], groups, done)
    if item.user_a ~= item.user_b and a and b and not a.disabled and not b.disabled
        and groups[name] == nil and done[name] == nil and index_of[name] == nil then
      index_of[name] = i
      rooms[#rooms + 1] = { name = name, a = a, b = b }
    end
  end
  local fresh, missed = {}, {}
  if #rooms == 0 then
    return fresh
  end
  local ok, created = pcall(room_batch.create, rooms)
  if not ok then
    nk.logger_warn("mosaic_create_rooms: one-statement insert failed, room by room: " ..
      error_text(created))
    return fresh
  end
  for name, i in pairs(index_of) do
    local id = created[name]
    if id ~= nil then
      fresh[i] = id
      local a, b = users[items[i].user_a].id, users[items[i].user_b].id
      groups[name] = { id = id, creator_id = a, open = false, edge_count = 2, kind = KIND,
        members = { [a] = 0, [b] = 2 } } -- a duplicate item later in the batch finds it
      done[name] = id
    else
      missed[#missed + 1] = name
    end
  end
  if #missed > 0 then
    for name, g in pairs(groups_by_name(missed)) do
      groups[name] = g
    end
    for name, id in pairs(done_rooms(missed)) do
      done[name] = id
    end
  end
  return fresh
end

local function create_rooms(context, payload)
  server_only(context)
  local items = decode_batch(payload, "rooms", MAX_ROOMS,
    { "cycle_id", "pair_key", "user_a", "user_b" })
  local keys = room_name_keys(context)
  once.ensure()
  local users = users_by_custom_id(unique_values(items, { "user_a", "user_b" }))
  local names, all_names = {}, {}
  for i, item in ipairs(items) do
    names[i] = room_names(keys, item.cycle_id, item.pair_key)
    for _, name in ipairs(names[i]) do
      all_names[#all_names + 1] = name
    end
  end
  local groups, done = groups_by_name(all_names), done_rooms(all_names)
  local fresh = create_fresh(items, users, groups, done, names)
  local results = {}
  for i, item in ipairs(items) do
    local ok, out = true, nil
    if fresh[i] ~= nil then
      out = room_answer(fresh[i], true)
    else
      ok, out = pcall(create_one, item, users, groups, done, names[i])
    end
    if ok then
      results[i] = { pair_key = item.pair_key, cycle_id = item.cycle_id, ok = true,
        group_id = out.group_id, channel_id = out.channel_id, created = out.created }
    else
      results[i] = { pair_key = item.pair_key, cycle_id = item.cycle_id, ok = false,
        permanent = (type(out) == "table" and getmetatable(out) == Permanent),
        error = error_text(out) }
    end
  end
  return nk.json_encode({ results = results })
end

-- ---------------------------------------------------------------------------------------
-- Notifications

-- The subset of keys sent before (whether or not the user deleted the notification since).
local function stored_keys(keys)
  local present = {}
  if #keys == 0 then
    return present
  end
  local rows = nk.sql_query([[
SELECT mosaic_key AS k
  FROM mosaic_notification_sent
 WHERE mosaic_key = ANY(string_to_array($1, ','))]], { join(keys, ",") })
  for _, r in ipairs(rows) do
    present[r.k] = true
  end
  return present
end

local function build_notification(item, key, user, partner)
  return {
    user_id = user.id,
    subject = NOTIFY_SUBJECT,
    content = {
      mosaic_key = key,
      cycle_id = item.cycle_id,
      group_id = item.group_id,
      channel_id = item.channel_id,
      partner_user_id = partner.id,
      partner_username = partner.username,
      partner_display_name = partner.display_name,
    },
    code = NOTIFY_CODE,
    persistent = true,
  }
end

local function notify_matches(context, payload)
  server_only(context)
  local items = decode_batch(payload, "notifications", MAX_NOTIFICATIONS,
    { "cycle_id", "pair_key", "user", "partner", "group_id", "channel_id" })
  once.ensure()
  local users = users_by_custom_id(unique_values(items, { "user", "partner" }))
  local keys, all_keys = {}, {}
  for i, item in ipairs(items) do
    keys[i] = mosaic_key(item.cycle_id, item.pair_key, item.user)
    all_keys[i] = keys[i]
  end
  local stored = stored_keys(all_keys)

  local results = {}
  local function answer(i, ok, fields)
    local r = { pair_key = items[i].pair_key, user = items[i].user, ok = ok }
    for k, v in pairs(fields) do
      r[k] = v
    end
    results[i] = r
  end

  local pending, first_of = {}, {} -- pending: {i, key, notification}; first_of: key -> i
  local repeats = {}               -- i -> index of the first item with the same key
  for i, item in ipairs(items) do
    local key = keys[i]
    local ok, err = pcall(function()
      local user = usable_user(users[item.user], "user", item.user)
      local partner = usable_user(users[item.partner], "partner", item.partner)
      if item.user == item.partner then
        error(permanent("user and partner are the same user"))
      end
      if stored[key] then
        answer(i, true, { sent = false })
      elseif first_of[key] then
        repeats[i] = first_of[key]
      else
        first_of[key] = i
        pending[#pending + 1] = { i = i, key = key,
          notification = build_notification(item, key, user, partner) }
      end
    end)
    if not ok then
      answer(i, false, { permanent = getmetatable(err) == Permanent, error = error_text(err) })
    end
  end

  if #pending > 0 then
    local batch = {}
    for n, p in ipairs(pending) do
      batch[n] = p.notification
    end
    local sent, batch_err = pcall(nk.notifications_send, batch)
    if sent then
      for _, p in ipairs(pending) do
        answer(p.i, true, { sent = true })
      end
    else
      -- All or nothing failed. Look again, then send the missing ones one by one so a
      -- bad row or a concurrent sender only affects its own items.
      local pending_keys = {}
      for n, p in ipairs(pending) do
        pending_keys[n] = p.key
      end
      local ok_q, now = pcall(stored_keys, pending_keys)
      local own, errs = {}, {}
      for _, p in ipairs(pending) do
        if ok_q and not now[p.key] then
          local ok_one, err_one = pcall(nk.notifications_send, { p.notification })
          own[p.key] = ok_one
          errs[p.key] = ok_one and nil or error_text(err_one)
        end
      end
      local ok_f, final = pcall(stored_keys, pending_keys)
      for _, p in ipairs(pending) do
        if own[p.key] then
          answer(p.i, true, { sent = true }) -- this call's INSERT stored it
        elseif ok_f and final[p.key] then
          answer(p.i, true, { sent = false }) -- stored by a concurrent call
        else
          answer(p.i, false, { permanent = false,
            error = "not delivered: " .. (errs[p.key] or error_text(batch_err)) })
        end
      end
    end
  end
  for i, first in pairs(repeats) do
    local r = results[first]
    if r.ok then
      answer(i, true, { sent = false })
    else
      answer(i, false, { permanent = r.permanent, error = r.error })
    end
  end
  return nk.json_encode({ results = results })
end


nk.register_rpc(create_rooms, "mosaic_create_rooms")
nk.register_rpc(notify_matches, "mosaic_notify_matches")

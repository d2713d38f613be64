--[[
Who may see or touch a match room through the client API (docs/security.md, "Match rooms:
who sees what"). Before-hooks only: Nakama 3.x after-hooks cannot change an answer, so a
listing that could show someone else's room is refused rather than filtered. Runtime calls
(the post-match RPCs in mosaic_rooms.lua, http_key) are not hooked.

  ListGroups                      refused for every user: every filter shape (name ILIKE,
                                  open=false, lang, members, none) reaches closed groups,
                                  with their creator id. A user's own groups come from
                                  ListUserGroups.
  ListUserGroups                  only the caller's own user id.
  ListGroupUsers                  on a match room: members only.
  JoinGroup, AddGroupUsers, PromoteGroupUsers, DemoteGroupUsers, KickGroupUsers,
  BanGroupUsers, DeleteGroup      refused on a match room (a member could otherwise let a
                                  third user in, or delete the room or ban the partner so
                                  that post-match retries fail).
  UpdateGroup                     refused on a match room; no client may take an "mm-" name
  CreateGroup                     (nobody can squat a room name before the server uses it).
  LeaveGroup                      allowed. Nakama refuses the last superadmin's leave, so
                                  when the creator leaves, the partner becomes superadmin.

The group channel (join over the socket, ListChannelMessages) needs membership in Nakama
itself (groupCheckUserPermission), and the console needs console credentials.
]]

local nk = require("nakama")

local M = {}

M.KIND = "mosaic_match" -- groups.metadata.kind of every match room
M.NAME_PREFIX = "mm-"

local PERMISSION_DENIED, INTERNAL = 7, 13
local MEMBER = 2 -- group_edge.state: 0 superadmin, 1 admin, 2 member, 3 join request, 4 banned
local UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function valid_uuid(id)
  return type(id) == "string" and string.match(id, UUID_PATTERN) ~= nil
end

-- {member_id -> state} of a match room, or nil when the group is not one.
local function match_room_members(group_id)
  if not valid_uuid(group_id) then
    return nil -- Nakama itself rejects the request
  end
  local ok, rows = pcall(nk.sql_query, [[
SELECT coalesce(e.destination_id::text, '') AS uid, coalesce(e.state, 99) AS state
  FROM groups g LEFT JOIN group_edge e ON e.source_id = g.id
 WHERE g.id = $1::uuid AND (g.metadata->>'kind' = $2 OR g.name LIKE 'mm-%')]],
    { group_id, M.KIND })
  if not ok then
    error({ "could not check the group", INTERNAL }) -- fail closed
  end
  if rows[1] == nil then
    return nil
  end
  local members = {}
  for _, r in ipairs(rows) do
    if r.uid ~= "" then
      members[r.uid] = tonumber(r.state)
    end
  end
  return members
end

function M.is_match_room(group_id)
  return match_room_members(group_id) ~= nil
end

local function reserved_name(name)
  return type(name) == "string" and string.lower(string.sub(name, 1, #M.NAME_PREFIX)) == M.NAME_PREFIX
end

local function refuse_for_match_rooms(action)
  return function(_context, payload)
    if M.is_match_room(payload and payload.group_id) then
      error({ action .. " is not allowed on a match room", PERMISSION_DENIED })
    end
    return payload
  end
end

local function before_update_group(_context, payload)
  if M.is_match_room(payload and payload.group_id) then
    error({ "match rooms cannot be changed", PERMISSION_DENIED })
  end
  if reserved_name(payload and payload.name) then
    error({ "group names starting with '" .. M.NAME_PREFIX .. "' are reserved", PERMISSION_DENIED })
  end
  return payload
end

local function before_create_group(_context, payload)
  if reserved_name(payload and payload.name) then
    error({ "group names starting with '" .. M.NAME_PREFIX .. "' are reserved", PERMISSION_DENIED })
  end
  return payload
end

local function before_list_groups(_context, _payload)
  error({ "listing groups is disabled: list your own groups (ListUserGroups)", PERMISSION_DENIED })
end

local function before_list_user_groups(context, payload)
  if payload == nil or payload.user_id ~= context.user_id then
    error({ "you can list only your own groups", PERMISSION_DENIED })
  end
  return payload
end

local function before_list_group_users(context, payload)
  local members = match_room_members(payload and payload.group_id)
  if members ~= nil then
    local state = members[context.user_id]
    if state == nil or state > MEMBER then
      error({ "only its members can list a match room's members", PERMISSION_DENIED })
    end
  end
  return payload
end

-- Nakama refuses the last superadmin's leave: make the partner superadmin first.
local function before_leave_group(context, payload)
  local members = match_room_members(payload and payload.group_id)
  if members == nil or members[context.user_id] ~= 0 then
    return payload
  end
  for uid, state in pairs(members) do
    if uid ~= context.user_id and state > 0 and state <= MEMBER then
      local ok = pcall(nk.sql_exec, [[
UPDATE group_edge SET state = 0
 WHERE (source_id = $1::uuid AND destination_id = $2::uuid)
    OR (source_id = $2::uuid AND destination_id = $1::uuid)]], { payload.group_id, uid })
      if not ok then
        error({ "could not leave the room", INTERNAL })
      end
    end
  end
  return payload
end

nk.register_req_before(before_list_groups, "ListGroups")
nk.register_req_before(before_list_user_groups, "ListUserGroups")
nk.register_req_before(before_list_group_users, "ListGroupUsers")
nk.register_req_before(refuse_for_match_rooms("joining"), "JoinGroup")
nk.register_req_before(refuse_for_match_rooms("adding users"), "AddGroupUsers")
nk.register_req_before(refuse_for_match_rooms("promoting users"), "PromoteGroupUsers")
nk.register_req_before(refuse_for_match_rooms("demoting users"), "DemoteGroupUsers")
nk.register_req_before(refuse_for_match_rooms("kicking users"), "KickGroupUsers")
nk.register_req_before(refuse_for_match_rooms("banning users"), "BanGroupUsers")
nk.register_req_before(refuse_for_match_rooms("deleting"), "DeleteGroup")
nk.register_req_before(before_update_group, "UpdateGroup")
nk.register_req_before(before_create_group, "CreateGroup")
nk.register_req_before(before_leave_group, "LeaveGroup")

return M

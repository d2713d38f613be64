--[[
Erasure of one user (mosaic users erase, app/ops/erase.py; docs/security.md, "Erasure").
Server to server only (runtime http_key):

  mosaic_erase_user {"user": custom_id, "group_ids": [match room group ids, ...]}
    -> {"account": 0|1, "room_done": n, "notification_sent": n, "partner_notifications": n}

In this order, each step idempotent (a second call finds nothing and answers zeros):
  partner_notifications  the partners' match notifications lose the fields naming this
                         user (partner_user_id, partner_username, partner_display_name);
  room_done              mosaic_room_done rows of the user's match rooms (the group ids
                         the caller found in the audit, plus the rooms the user is still
                         in): without the account no replay can create such a room again
                         (mosaic_create_rooms answers "does not exist", permanent);
  notification_sent      the user's mosaic_notification_sent rows (the account's delete
                         would cascade to them too; counted here);
  account                Nakama's own account delete (nk.account_delete_id): the users
                         row with its devices, storage, notifications, friends and group
                         memberships; not recorded in user_tombstone (no id kept).
]]

local nk = require("nakama")

local INVALID_ARGUMENT, PERMISSION_DENIED = 3, 7

local function decode(context, payload)
  if context.user_id ~= nil and context.user_id ~= "" then
    error({ "server-to-server RPC: call it with the runtime http_key", PERMISSION_DENIED })
  end
  local ok, body = pcall(nk.json_decode, payload or "")
  if not ok or type(body) ~= "table" or type(body.user) ~= "string" or body.user == "" then
    error({ "payload must be {\"user\": custom id, \"group_ids\": [...]}", INVALID_ARGUMENT })
  end
  local group_ids = body.group_ids or {}
  if type(group_ids) ~= "table" then
    error({ "group_ids must be a list of strings", INVALID_ARGUMENT })
  end
  for _, id in ipairs(group_ids) do
    if type(id) ~= "string" then
      error({ "group_ids must be a list of strings", INVALID_ARGUMENT })
    end
  end
  return body.user, group_ids
end

local function erase_user(context, payload)
  local custom_id, group_ids = decode(context, payload)
  local rows = nk.sql_query("SELECT id::text AS id FROM users WHERE custom_id = $1",
    { custom_id })
  local user_id = rows[1] and rows[1].id
  local answer = { account = 0, room_done = 0, notification_sent = 0,
                   partner_notifications = 0 }
  if user_id ~= nil then
    answer.partner_notifications = nk.sql_exec([[
UPDATE notification
   SET content = content - 'partner_user_id' - 'partner_username' - 'partner_display_name'
 WHERE content->>'partner_user_id' = $1]], { user_id })
  end
  answer.room_done = nk.sql_exec([[
DELETE FROM mosaic_room_done
 WHERE group_id::text = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
    OR group_id IN (SELECT source_id FROM group_edge WHERE destination_id::text = $2)]],
    { #group_ids > 0 and nk.json_encode(group_ids) or "[]", user_id or "" })
  if user_id ~= nil then
    answer.notification_sent = nk.sql_exec(
      "DELETE FROM mosaic_notification_sent WHERE user_id = $1::uuid", { user_id })
    nk.account_delete_id(user_id, false)
    answer.account = 1
  end
  return nk.json_encode(answer)
end

nk.register_rpc(erase_user, "mosaic_erase_user")

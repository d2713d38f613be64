--[[
What a replay must never undo (docs/postmatch.md, "Idempotency, step by step"): a match
room completed once, a match notification sent once. Both are rows in Nakama's own
PostgreSQL, written by triggers in the transaction of the change they record, so no crash
can fall between the change and its record; no client API reaches them.

  mosaic_room_done (name, group_id, done_at)     a match room was closed: its creation
                                                 completed. A member missing later left;
                                                 the row outlives the group, which Nakama
                                                 deletes when its last member leaves.
  mosaic_notification_sent (mosaic_key, user_id, sent_at)
                                                 a match notification was stored. Its
                                                 primary key refuses a second INSERT of
                                                 the key (deleted or not); the row goes
                                                 with the user's account.
  mosaic_notification_once                       UNIQUE index over the stored
                                                 notifications' keys.

Created at load, and checked (one catalog query) before every batch by the RPCs of
mosaic_rooms.lua, recreated if missing. The rows grow with the matches (one per room, one
per notification), like Nakama's own group and notification rows.
]]

local nk = require("nakama")
local privacy = require("mosaic_privacy")

local M = {}

M.NOTIFY_CODE = 101 -- > 0: application notification code for "match found"
local NOTIFY_CODE, KIND = M.NOTIFY_CODE, privacy.KIND
local UNAVAILABLE = 14

local ONCE_INDEX = "mosaic_notification_once"

-- Idempotent statements; the backfills cover rows written while a trigger was missing
-- (as long as the room or notification is still there).
local GUARD_SQL = {
  "CREATE UNIQUE INDEX IF NOT EXISTS " .. ONCE_INDEX ..
    " ON notification ((content->>'mosaic_key')) WHERE code = " .. NOTIFY_CODE,
  [[CREATE TABLE IF NOT EXISTS mosaic_room_done (
  name text PRIMARY KEY, group_id uuid NOT NULL, done_at timestamptz NOT NULL DEFAULT now())]],
  [[CREATE OR REPLACE FUNCTION mosaic_room_done_mark() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO mosaic_room_done (name, group_id) VALUES (NEW.name, NEW.id)
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $f$]],
  [[CREATE OR REPLACE TRIGGER mosaic_room_done AFTER UPDATE ON groups FOR EACH ROW
  WHEN (OLD.state = 0 AND NEW.state = 1 AND NEW.metadata->>'kind' = ']] .. KIND .. [[')
  EXECUTE FUNCTION mosaic_room_done_mark()]],
  [[INSERT INTO mosaic_room_done (name, group_id)
SELECT name, id FROM groups WHERE state = 1 AND metadata->>'kind' = ']] .. KIND .. [['
ON CONFLICT DO NOTHING]],
  [[CREATE TABLE IF NOT EXISTS mosaic_notification_sent (
  mosaic_key text PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  sent_at timestamptz NOT NULL DEFAULT now())]],
  -- No ON CONFLICT: a key sent before fails the INSERT, like the index for stored rows.
  [[CREATE OR REPLACE FUNCTION mosaic_notification_sent_mark() RETURNS trigger
LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO mosaic_notification_sent (mosaic_key, user_id)
  VALUES (NEW.content->>'mosaic_key', NEW.user_id);
  RETURN NULL;
END $f$]],
  [[CREATE OR REPLACE TRIGGER mosaic_notification_sent AFTER INSERT ON notification
  FOR EACH ROW WHEN (NEW.code = ]] .. NOTIFY_CODE .. [[ AND NEW.content->>'mosaic_key' IS NOT NULL)
  EXECUTE FUNCTION mosaic_notification_sent_mark()]],
  [[INSERT INTO mosaic_notification_sent (mosaic_key, user_id)
SELECT DISTINCT ON (content->>'mosaic_key') content->>'mosaic_key', user_id
  FROM notification WHERE code = ]] .. NOTIFY_CODE .. [[ AND content->>'mosaic_key' IS NOT NULL
ON CONFLICT DO NOTHING]],
}

-- One catalog query: the index valid and unique, both tables, both triggers enabled.
local GUARD_CHECK_SQL = [[
SELECT (SELECT coalesce(bool_and(i.indisvalid AND i.indisunique), false)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname = $1 AND i.indrelid = 'notification'::regclass)
   AND to_regclass('mosaic_room_done') IS NOT NULL
   AND to_regclass('mosaic_notification_sent') IS NOT NULL
   AND (SELECT count(*) FROM pg_trigger t
         WHERE t.tgenabled <> 'D' AND (
               (t.tgname = 'mosaic_room_done' AND t.tgrelid = 'groups'::regclass)
            OR (t.tgname = 'mosaic_notification_sent'
                AND t.tgrelid = 'notification'::regclass))) = 2 AS ok]]

-- Checked before every batch (one catalog query): the guarantees rest on these objects, so
-- a missing one is recreated, or the batch refused, rather than run unguarded.
function M.ensure()
  local function valid()
    local rows = nk.sql_query(GUARD_CHECK_SQL, { ONCE_INDEX })
    return rows[1] ~= nil and rows[1].ok == true
  end
  if not valid() then
    for _, statement in ipairs(GUARD_SQL) do
      pcall(nk.sql_exec, statement) -- may lose a race with another call: check again
    end
    if not valid() then
      error({ "the replay guards (" .. ONCE_INDEX .. ", mosaic_room_done, " ..
        "mosaic_notification_sent) are missing", UNAVAILABLE })
    end
  end
end

nk.run_once(function(context)
  -- Best effort at startup (run_once runs only the first run_once of all modules);
  -- the RPCs check them before every batch.
  for _, statement in ipairs(GUARD_SQL) do
    pcall(nk.sql_exec, statement)
  end
end)

return M

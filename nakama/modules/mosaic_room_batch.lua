--[[
New match rooms of a batch in ONE SQL statement (one transaction, one WAL flush), used by
mosaic_create_rooms (mosaic_rooms.lua) for the common case: a pair whose room does not
exist under any of its names and was never completed. The runtime path (group_create,
group_user_join, group_update: three transactions per room) stays for everything else,
and for every room when this statement fails as a whole.

Per room the statement writes what that runtime path leaves behind (Nakama's
CreateGroup, JoinGroup and UpdateGroup, server/core_group.go):
  groups          closed (state 1), max_count 2, edge_count 2, lang "en",
                  metadata {kind = "mosaic_match"}, empty description and avatar
  group_edge      both directions per member: user_a as superadmin (state 0), user_b as
                  member (state 2), each pair of rows under one position (unix ns)
  message         user_b's "joined" entry in the group channel (code 3, as JoinGroup
                  stores it; no one is on the channel yet, so nothing is sent live)
  mosaic_room_done  the completed room's record (mosaic_once.lua), in the same statement
                  as the room itself: the room is born closed, so the close trigger
                  never fires for it
The room is never open, so there is no window for a third user. A name taken meanwhile
(a concurrent call) is skipped (ON CONFLICT DO NOTHING) and its pair goes the runtime
way, which finds that room. Rows are inserted in name order, so two concurrent calls
with overlapping batches wait for each other instead of deadlocking.
]]

local nk = require("nakama")
local privacy = require("mosaic_privacy")

local M = {}

local CREATE_SQL = [[
WITH input AS (
  SELECT x.name, x.a::uuid AS a, x.b::uuid AS b, x.b_username, x.n
    FROM jsonb_to_recordset($1::jsonb) AS x(name text, a text, b text, b_username text, n int)),
created AS (
  INSERT INTO groups (id, creator_id, name, description, avatar_url, lang_tag, metadata,
                      state, edge_count, max_count)
  SELECT gen_random_uuid(), a, name, '', '', 'en', $2::jsonb, 1, 2, 2
    FROM input ORDER BY name
  ON CONFLICT (name) DO NOTHING
  RETURNING id, name),
room AS (
  SELECT c.id, c.name, i.a, i.b, i.b_username,
         (extract(epoch FROM now()) * 1000000)::bigint * 1000 + 2 * i.n AS pos
    FROM created c JOIN input i USING (name)),
edges AS (
  INSERT INTO group_edge (position, state, source_id, destination_id)
  SELECT e.position, e.state, e.source_id, e.destination_id
    FROM room r CROSS JOIN LATERAL (VALUES (r.pos, 0, r.id, r.a), (r.pos, 0, r.a, r.id),
                                           (r.pos + 1, 2, r.id, r.b), (r.pos + 1, 2, r.b, r.id))
         AS e(position, state, source_id, destination_id)),
joined AS (
  INSERT INTO message (id, code, sender_id, username, stream_mode, stream_subject,
                       stream_descriptor, stream_label, content, create_time, update_time)
  SELECT gen_random_uuid(), 3, r.b, r.b_username, 3, r.id,
         '00000000-0000-0000-0000-000000000000', '', '{}',
         date_trunc('second', now()), date_trunc('second', now())
    FROM room r),
done AS (
  INSERT INTO mosaic_room_done (name, group_id)
  SELECT name, id FROM room ON CONFLICT DO NOTHING)
SELECT name, id::text AS id FROM room]]

-- rooms: list of {name, a = user row, b = user row} (user rows as users_by_custom_id
-- returns them). Returns name -> group id of the rooms this statement created; raises
-- when the statement fails (nothing was written then).
function M.create(rooms)
  local input = {}
  for n, r in ipairs(rooms) do
    input[n] = { name = r.name, a = r.a.id, b = r.b.id, b_username = r.b.username, n = n }
  end
  local rows = nk.sql_query(CREATE_SQL, { nk.json_encode(input),
    nk.json_encode({ kind = privacy.KIND }) })
  local created = {}
  for _, row in ipairs(rows) do
    created[row.name] = row.id
  end
  return created
end

return M

import { test } from "node:test";
import assert from "node:assert/strict";
import { describeStatus, missedText } from "../src/core/status.ts";

const fmt = (d: Date) => d.toISOString();

test("waiting: since when, missed cycles, the last cycle's reason, place kept", () => {
  const v = describeStatus({ state: "waiting", waiting_since: "2026-12-07T10:00:00Z",
    missed_cycles: 2, last_cycle_id: "main:20261207T110000Z", unmatched_reason: "odd_one_out" }, fmt);
  assert.equal(v.state, "waiting");
  assert.equal(v.text, "Waiting for a match since 2026-12-07T10:00:00.000Z.");
  assert.equal(v.missedCycles, 2);
  assert.equal(v.unmatched?.cycleId, "main:20261207T110000Z");
  assert.equal(v.unmatched?.reason, "odd_one_out");
  assert.match(v.unmatched!.text, /^Not matched in cycle main:20261207T110000Z: an odd number.*keep your place in line/);
  assert.equal(v.canOptIn, false, "a second opt-in while waiting is not offered");
  assert.equal(v.canOptOut, true);
});

test("waiting from an older server: no unmatched line, zero missed", () => {
  const v = describeStatus({ state: "waiting" }, fmt);
  assert.equal(v.unmatched, undefined);
  assert.equal(v.missedCycles, 0);
  assert.equal(v.text, "Waiting for a match.");
});

test("an unknown reason code still reads as a sentence", () => {
  const v = describeStatus({ state: "waiting", last_cycle_id: "c", unmatched_reason: "new_code" }, fmt);
  assert.match(v.unmatched!.text, /no suitable partner this time/);
});

test("profile failed shows the server's message, never the raw detail", () => {
  const v = describeStatus({ state: "profile_failed", reason_code: "insights_missing",
    message: "We found no insights for you yet.", detail: "s3://bucket/user-123 KeyError" } as never, fmt);
  assert.equal(v.reason, "We found no insights for you yet.");
  assert.equal(JSON.stringify(v).includes("KeyError"), false);
  assert.equal(v.canOptIn, true);
  const bare = describeStatus({ state: "profile_failed" }, fmt);
  assert.match(bare.reason!, /could not be prepared/);
});

test("preparing, matched, not opted in, unknown", () => {
  assert.equal(describeStatus({ state: "preparing_profile" }, fmt).text, "Preparing your profile...");
  const m = describeStatus({ state: "matched", cycle_id: "c9", room_id: "g", updated_at: "x" }, fmt);
  assert.equal(m.text, "Matched in cycle c9.");
  assert.deepEqual(m.matched, { cycleId: "c9", groupId: "g", at: "x" });
  assert.equal(describeStatus({ state: "not_opted_in" }, fmt).canOptIn, true);
  assert.equal(describeStatus({ state: "bogus" }, fmt).state, "unknown");
  assert.equal(describeStatus({}, fmt).state, "unknown");
});

test("missed cycles in words", () => {
  assert.equal(missedText(0), "No missed cycles yet.");
  assert.equal(missedText(1), "1 missed cycle so far.");
  assert.equal(missedText(3), "3 missed cycles so far.");
});

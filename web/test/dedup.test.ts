import { test } from "node:test";
import assert from "node:assert/strict";
import { matchNotice, recentEnough, SeenMatches, type KeyValueStore } from "../src/core/dedup.ts";

class MemoryStore implements KeyValueStore {
  readonly data = new Map<string, string>();
  getItem(key: string): string | null { return this.data.get(key) ?? null; }
  setItem(key: string, value: string): void { this.data.set(key, value); }
}

const notification = (cycle: string, partner: string) => ({
  code: 101, create_time: "2026-12-07T11:00:00Z",
  content: { cycle_id: cycle, partner_user_id: partner, partner_display_name: "Ada",
    group_id: "g1" },
});

test("a match is shown the first time only, per (cycle, partner)", () => {
  const seen = new SeenMatches(new MemoryStore(), "me");
  const first = matchNotice(notification("c1", "p1"))!;
  assert.equal(seen.firstTime(first), true);
  assert.equal(seen.firstTime(first), false);
  assert.equal(seen.firstTime(matchNotice(notification("c2", "p1"))!), true, "a new cycle");
  assert.equal(seen.firstTime(matchNotice(notification("c1", "p2"))!), true, "a new partner");
});

test("what was shown survives a reload (the same storage, a new object)", () => {
  const store = new MemoryStore();
  const notice = matchNotice(notification("c1", "p1"))!;
  assert.equal(new SeenMatches(store, "me").firstTime(notice), true);
  assert.equal(new SeenMatches(store, "me").firstTime(notice), false);
  assert.equal(new SeenMatches(store, "someone-else").firstTime(notice), true,
    "another user in the same browser keeps their own list");
});

test("corrupt storage does not stop notifications", () => {
  const store = new MemoryStore();
  store.setItem("mosaic.seen-matches.me", "{not json");
  assert.equal(new SeenMatches(store, "me").firstTime(matchNotice(notification("c", "p"))!), true);
});

test("only match notifications with a cycle and a partner are matches", () => {
  assert.equal(matchNotice({ code: 1, content: notification("c", "p").content }), null);
  assert.equal(matchNotice({ code: 101, content: { cycle_id: "c" } }), null);
  assert.equal(matchNotice({ code: 101 }), null);
  const n = matchNotice(notification("c", "p"))!;
  assert.deepEqual(n, { cycleId: "c", partnerId: "p", partnerName: "Ada", groupId: "g1",
    createdMs: Date.parse("2026-12-07T11:00:00Z") });
  const noName = matchNotice({ code: 101, content: { cycle_id: "c", partner_user_id: "p",
    partner_username: "user7" } })!;
  assert.equal(noName.partnerName, "user7");
});

test("the remembered list is bounded", () => {
  const store = new MemoryStore();
  const seen = new SeenMatches(store, "me");
  for (let i = 0; i < 250; i++) seen.firstTime(matchNotice(notification(`c${i}`, "p"))!);
  assert.equal(JSON.parse(store.getItem("mosaic.seen-matches.me")!).length, 200);
  assert.equal(seen.firstTime(matchNotice(notification("c249", "p"))!), false);
});

test("a stored match is news for a day, then no longer", () => {
  const n = matchNotice(notification("c", "p"))!; // created 2026-12-07T11:00:00Z
  const created = Date.parse("2026-12-07T11:00:00Z");
  assert.equal(recentEnough(n, created + 60_000), true);
  assert.equal(recentEnough(n, created + 24 * 3600_000), true);
  assert.equal(recentEnough(n, created + 24 * 3600_000 + 1), false);
  assert.equal(recentEnough({ ...n, createdMs: 0 }, created), false, "no create time: not news");
});

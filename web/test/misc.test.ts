import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelayMs } from "../src/core/backoff.ts";
import { chatLine, mergeLines } from "../src/core/chatlog.ts";

test("backoff grows, is capped, and is jittered within [ceiling/2, ceiling]", () => {
  const policy = { baseMs: 500, maxMs: 8000 };
  assert.equal(backoffDelayMs(0, policy, () => 0), 250);
  assert.equal(backoffDelayMs(0, policy, () => 0.999999), 500);
  assert.equal(backoffDelayMs(3, policy, () => 0.999999), 4000);
  assert.equal(backoffDelayMs(10, policy, () => 0.999999), 8000);
  assert.equal(backoffDelayMs(1000, policy, () => 0), 4000);
});

test("chat history and live messages merge once each, in time order", () => {
  const a = { id: "a", senderId: "u1", senderName: "x", text: "hi", createdMs: 1 };
  const b = { id: "b", senderId: "u2", senderName: "y", text: "yo", createdMs: 2 };
  assert.deepEqual(mergeLines([b], [a, b]), [a, b]);
});

test("chat lines from socket (object) and list (string) content", () => {
  const live = chatLine({ message_id: "m", sender_id: "u", username: "n", content: { text: "hey" },
    create_time: "2026-12-07T11:00:00Z" });
  assert.equal(live?.text, "hey");
  const listed = chatLine({ message_id: "m", content: '{"text":"hey"}' });
  assert.equal(listed?.text, "hey");
  assert.equal(chatLine({ message_id: "m", content: "not json" }), null);
  assert.equal(chatLine({ content: { text: "no id" } }), null);
});

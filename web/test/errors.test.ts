import { test } from "node:test";
import assert from "node:assert/strict";
import { retryAfterFrom, userError } from "../src/core/errors.ts";

test("rate limited by the RPC: the wait from the message", () => {
  const e = userError({ httpStatus: 429, code: 8, message: "too many requests (retry after 2.5 s)" });
  assert.equal(e.kind, "rate_limited");
  assert.equal(e.retryAfterSeconds, 2.5);
  assert.match(e.text, /try again in 3 s/);
});

test("rate limited without a wait", () => {
  const e = userError({ code: 8, message: "too many requests" });
  assert.equal(e.kind, "rate_limited");
  assert.equal(e.retryAfterSeconds, undefined);
  assert.match(e.text, /wait a moment/);
});

test("matching unavailable: 503, INTERNAL, no answer at all", () => {
  for (const f of [{ httpStatus: 503, code: 14 }, { httpStatus: 500, code: 13 }, { network: true }]) {
    const e = userError(f);
    assert.equal(e.kind, "unavailable", JSON.stringify(f));
    assert.match(e.text, /temporarily unavailable/);
  }
});

test("session expired", () => {
  assert.equal(userError({ httpStatus: 401, code: 16 }).kind, "session_expired");
  assert.match(userError({ code: 16 }).text, /sign in again/);
});

test("socket lost", () => {
  assert.equal(userError({ socketLost: true }).kind, "socket_lost");
});

test("invalid requests show the server's user message as a sentence", () => {
  const e = userError({ httpStatus: 400, code: 3, message: "you cannot block yourself" });
  assert.deepEqual(e, { kind: "invalid", text: "You cannot block yourself." });
});

test("unknown failures never show raw details", () => {
  const e = userError({ httpStatus: 418, message: "traceback at line 3 user 1234" });
  assert.equal(e.kind, "other");
  assert.doesNotMatch(e.text, /traceback|1234/);
});

test("retry-after parsing", () => {
  assert.equal(retryAfterFrom("matching is temporarily unavailable (retry after 30 s)"), 30);
  assert.equal(retryAfterFrom("nothing here"), undefined);
  assert.equal(retryAfterFrom(undefined), undefined);
});

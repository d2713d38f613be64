import { test } from "node:test";
import assert from "node:assert/strict";
import { canPress, nextButtonState, type ButtonEvent, type ButtonState } from "../src/core/buttons.ts";

const cases: [string, ButtonState, ButtonEvent, ButtonState][] = [
  ["press starts processing", "idle", "press", "processing"],
  ["a second press while processing is ignored", "processing", "press", "processing"],
  ["success ends processing", "processing", "succeed", "success"],
  ["failure ends processing", "processing", "fail", "error"],
  ["a retry after an error", "error", "press", "processing"],
  ["a press after success", "success", "press", "processing"],
  ["a late answer does not change a settled button", "success", "fail", "success"],
  ["reset after success", "success", "reset", "idle"],
  ["reset does not cancel processing", "processing", "reset", "processing"],
  ["an answer without a press changes nothing", "idle", "succeed", "idle"],
];

for (const [name, from, event, to] of cases) {
  test(name, () => assert.equal(nextButtonState(from, event), to));
}

test("a processing button cannot be pressed", () => {
  assert.equal(canPress("processing"), false);
  assert.equal(canPress("idle"), true);
  assert.equal(canPress("error"), true);
});

import { test, mock } from "node:test";
import assert from "node:assert/strict";
import { LiveSocket, type SocketEvents, type SocketState } from "../src/socket.ts";
import { SessionExpired, type SessionManager } from "../src/session.ts";

// A stand-in for nakama-js' socket: connect() succeeds unless told otherwise; disconnect()
// fires ondisconnect like a closed WebSocket (twice when asked: adapter close + event).
class FakeSocket {
  ondisconnect: (evt: unknown) => void = () => {};
  onnotification: (n: unknown) => void = () => {};
  onchannelmessage: (m: unknown) => void = () => {};
  constructor(private readonly fail: unknown) {}
  async connect(): Promise<void> { if (this.fail) throw this.fail; }
  disconnect(fire: boolean): void { if (fire) { this.ondisconnect({}); this.ondisconnect({}); } }
}

function harness(failures: unknown[] = []) {
  const sockets: FakeSocket[] = [];
  const sessions = {
    client: { useSSL: false, createSocket: () => {
      const s = new FakeSocket(failures.shift()); sockets.push(s); return s;
    } },
    nakamaSession: async () => ({}),
  } as unknown as SessionManager;
  const log: string[] = [];
  const events: SocketEvents = {
    state: (s: SocketState) => log.push(s),
    connected: (_socket, reconnect) => log.push(reconnect ? "reconnected" : "first"),
    notification: () => {}, channelMessage: () => {},
    fatal: () => log.push("fatal"),
  };
  return { live: new LiveSocket(sessions, events), sockets, log };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("a lost socket reconnects once after its backoff, even when it reports the loss twice", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { live, sockets, log } = harness();
    live.start();
    await settle();
    assert.deepEqual(log, ["connecting", "connected", "first"]);
    live.drop();
    assert.deepEqual(log.slice(3), ["reconnecting"]);
    mock.timers.tick(15_000);
    await settle();
    assert.equal(sockets.length, 2, "one new socket, not one per close event");
    assert.deepEqual(log.slice(3), ["reconnecting", "connected", "reconnected"]);
    live.stop();
  } finally {
    mock.timers.reset();
  }
});

test("a failed connect retries; an expired session stops for good", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { live, sockets, log } = harness([new Error("refused"), new SessionExpired("x")]);
    live.start();
    await settle();
    assert.deepEqual(log, ["connecting", "reconnecting"]);
    mock.timers.tick(15_000);
    await settle();
    assert.deepEqual(log, ["connecting", "reconnecting", "fatal"]);
    mock.timers.tick(60_000);
    await settle();
    assert.equal(sockets.length, 2, "no retry after the session expired");
  } finally {
    mock.timers.reset();
  }
});

test("a close event of an old socket does not disturb the current one", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { live, sockets, log } = harness();
    live.start();
    await settle();
    live.drop();
    mock.timers.tick(15_000);
    await settle();
    sockets[0].ondisconnect({}); // late event of the first connection
    assert.equal(log.at(-1), "reconnected");
    assert.equal(sockets.length, 2);
  } finally {
    mock.timers.reset();
  }
});

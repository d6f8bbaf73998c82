// The client's own logic, without a broker: what it sends in Hello, ack
// ranges, argument checks. (Everything that talks to a broker is in
// test/integration.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, HeraldError } from "../../src/index.js";
import { FrameDecoder, decodeMessage, encodeFrame } from "../../src/codec.js";
import { toRanges } from "../../src/subscription.js";
import { startPosition } from "../../src/client.js";

/** A WebSocket stand-in that records what is sent and answers Hello. */
function fakeSocket(reply) {
  const sent = [];
  class Fake {
    constructor(url) {
      this.url = url;
      setTimeout(() => this.onopen?.(), 0);
    }
    send(bytes) {
      const d = new FrameDecoder();
      d.push(bytes);
      const m = decodeMessage(d.next());
      sent.push(m);
      const answer = reply(m);
      if (answer) setTimeout(() => this.onmessage?.({ data: answer.buffer }), 0);
    }
    close() {}
  }
  return { Fake, sent };
}

const helloOk = (m, clientId) =>
  encodeFrame("HelloOk", m.requestId, { version: 1, client_id: clientId, max_frame: 1 << 23, max_batch: 1 << 20, heartbeat_ms: 10000 });

test("Hello carries the client id and the token", async () => {
  const { Fake, sent } = fakeSocket((m) => m.op === "Hello" && helloOk(m, "alice"));
  const h = await connect("ws://x/ws", { WebSocket: Fake, clientId: "alice", token: "t0ken" });
  assert.equal(sent[0].op, "Hello");
  assert.deepEqual(sent[0].body, { min_version: 1, max_version: 1, client_name: "herald-js/0.1.0", client_id: "alice", token: "t0ken" });
  assert.equal(h.clientId, "alice");
  await h.close({ timeoutMs: 0 });
});

test("without a client id the broker's is kept", async () => {
  const { Fake, sent } = fakeSocket((m) => m.op === "Hello" && helloOk(m, "c-42"));
  const h = await connect("ws://x/ws", { WebSocket: Fake });
  assert.equal(sent[0].body.client_id, null);
  assert.equal(sent[0].body.token, null);
  assert.equal(h.clientId, "c-42");
  await h.close({ timeoutMs: 0 });
});

test("a refused handshake rejects connect with the broker's error", async () => {
  const { Fake } = fakeSocket((m) => encodeFrame("Error", m.requestId, { code: 5, message: "bad token" }));
  await assert.rejects(connect("ws://x/ws", { WebSocket: Fake }), (e) => e instanceof HeraldError && e.code === "Unauthorized");
});

test("no WebSocket class is a clear error", async () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    await assert.rejects(connect("ws://x/ws"), /ws package/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("acked offsets become ranges", () => {
  assert.deepEqual(toRanges([5, 1, 2, 3, 9, 7, 8, 2]), [[1, 3], [5, 5], [7, 9]]);
  assert.deepEqual(toRanges([]), []);
});

test("start positions", () => {
  assert.equal(startPosition("resume"), "Resume");
  assert.equal(startPosition("earliest"), "Earliest");
  assert.equal(startPosition("latest"), "Latest");
  assert.deepEqual(startPosition({ offset: 3 }), { Offset: 3 });
  assert.deepEqual(startPosition({ timestamp: -1 }), { Timestamp: -1 });
  assert.throws(() => startPosition("soon"), /start/);
});

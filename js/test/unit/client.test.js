// The client's own logic, without a broker: what it sends in Hello, ack
// ranges, argument checks. (Everything that talks to a broker is in
// test/integration.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, HeraldError } from "../../src/index.js";
import { FrameDecoder, decodeMessage, encodeFrame } from "../../src/codec.js";
import { mergeRanges, Ranges, UNCONFIRMED_MAX } from "../../src/subscription.js";
import { startPosition } from "../../src/client.js";
import { buildBatch } from "../../src/batch.js";

const dec = (b) => new TextDecoder().decode(b);

/** A WebSocket stand-in that records what is sent and answers Hello. */
function fakeSocket(reply) {
  const sent = [];
  const sends = [];
  class Fake {
    constructor(url) {
      this.url = url;
      setTimeout(() => this.onopen?.(), 0);
    }
    send(bytes) {
      // A message may carry several frames (the client sends what it
      // wrote in one go together).
      const d = new FrameDecoder();
      d.push(bytes);
      for (let f = d.next(); f; f = d.next()) {
        const m = decodeMessage(f);
        sent.push(m);
        const answer = reply(m);
        if (answer) setTimeout(() => this.onmessage?.({ data: answer.buffer }), 0);
      }
      sends.push(bytes);
    }
    close() {}
  }
  return { Fake, sent, sends };
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

test("messages are taken as Node's ws hands them (Buffers) or as ArrayBuffers elsewhere", async () => {
  // ws takes "nodebuffer" (and then hands out Buffers, views of what the
  // socket read); a browser ignores a name it does not know, undici turns
  // it into "blob": both then get "arraybuffer".
  const kinds = {
    ws: (t) => (["nodebuffer", "arraybuffer", "fragments"].includes(t) ? t : undefined),
    browser: (t) => (["blob", "arraybuffer"].includes(t) ? t : undefined),
    undici: (t) => (t === "arraybuffer" ? t : "blob"),
  };
  for (const [kind, accept] of Object.entries(kinds)) {
    let socket;
    class Fake {
      constructor() {
        this._type = "blob";
        socket = this;
        setTimeout(() => this.onopen?.(), 0);
      }
      get binaryType() {
        return this._type;
      }
      set binaryType(t) {
        this._type = accept(t) ?? this._type;
      }
      send(bytes) {
        const d = new FrameDecoder();
        d.push(bytes);
        const m = decodeMessage(d.next());
        if (m.op !== "Hello") return;
        const ok = helloOk(m, "alice");
        // The answer as this kind of socket hands it over: for ws, a view
        // at an odd place in a bigger buffer, with the start of the next
        // frame after it (which must not be taken for part of this one).
        let data;
        if (this._type === "nodebuffer") {
          const big = Buffer.alloc(ok.length + 7);
          big.set(ok, 3);
          data = big.subarray(3, 3 + ok.length);
        } else {
          assert.equal(this._type, "arraybuffer", kind);
          data = ok.slice().buffer;
        }
        setTimeout(() => this.onmessage?.({ data }), 0);
      }
      close() {}
    }
    const h = await connect("ws://x/ws", { WebSocket: Fake, clientId: "alice" });
    assert.equal(socket.binaryType, kind === "ws" ? "nodebuffer" : "arraybuffer", kind);
    assert.equal(h.clientId, "alice", kind);
    await h.close({ timeoutMs: 0 });
  }
});

test("acked offsets become ranges, in order or not, repeated or not", () => {
  const r = new Ranges();
  assert.ok(r.empty);
  for (const o of [5, 1, 2, 3, 9, 7, 8, 2]) r.add(o);
  assert.ok(r.has(8) && r.has(1) && !r.has(4) && !r.has(10));
  assert.equal(r.added, 8);
  assert.deepEqual(r.take(), [[1, 3], [5, 5], [7, 9]]);
  assert.ok(r.empty);
  assert.equal(r.added, 0);
  for (let o = 100; o < 1100; o++) r.add(o);
  assert.equal(r.ranges.length, 1, "in order: one range, extended");
  r.addRanges([[1100, 1200], [50, 60]]);
  assert.deepEqual(r.take(), [[50, 60], [100, 1200]]);
  assert.deepEqual(mergeRanges([[4, 6], [1, 2], [3, 3], [8, 9], [5, 5]]), [[1, 6], [8, 9]]);
  assert.deepEqual(mergeRanges([]), []);
});

test("start positions", () => {
  assert.equal(startPosition("resume"), "Resume");
  assert.equal(startPosition("earliest"), "Earliest");
  assert.equal(startPosition("latest"), "Latest");
  assert.deepEqual(startPosition({ offset: 3 }), { Offset: 3 });
  assert.deepEqual(startPosition({ timestamp: -1 }), { Timestamp: -1 });
  assert.throws(() => startPosition("soon"), /start/);
});

/** A fake broker: answers Hello, Subscribe (ids 1, 2, ...), MyRooms and
 * Refresh; `push(op, body)` sends a push on the connection. */
function fakeBroker({ rooms = [], clientId = "me", answerAcks = false } = {}) {
  let socket = null;
  let nextSub = 1;
  const subs = new Map();
  const { Fake, sent, sends } = fakeSocket((m) => {
    if (m.op === "Hello") return helloOk(m, clientId);
    if (m.op === "Subscribe") {
      const id = nextSub++;
      subs.set(m.body.topic, id);
      return encodeFrame("SubscribeOk", m.requestId, { subscription_id: id, start_offset: 0 });
    }
    if (m.op === "MyRooms") return encodeFrame("RoomList", m.requestId, { rooms });
    if (m.op === "Refresh" || m.op === "Join") return encodeFrame("Ok", m.requestId);
    if (m.op === "Ack" && answerAcks && m.requestId !== 0) return encodeFrame("Ok", m.requestId);
    return null;
  });
  class Tracked extends Fake {
    constructor(url) {
      super(url);
      socket = this;
    }
  }
  const push = (op, body) => setTimeout(() => socket.onmessage?.({ data: encodeFrame(op, 0, body).buffer }), 0);
  return { Fake: Tracked, sent, sends, subs, push };
}

/** A Deliver of records with these payloads at offsets 0.. to subscription `id`. */
function deliver(id, payloads) {
  const batch = buildBatch(payloads.map((p) => ({ payload: new TextEncoder().encode(p), timestamp: 1 })));
  return { subscription_id: id, first_offset: 0, last_offset: payloads.length - 1, delivery_count: 1, batch };
}

test("a Skipped push is told in its place among the messages, and the subscription goes on", async () => {
  const fake = fakeBroker();
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const told = [];
  const sub = h.subscribe("t", { group: "g", onSkipped: (s) => told.push(s) });
  await sub.ready;
  fake.push("Deliver", deliver(1, ["a", "b"]));
  fake.push("Skipped", { subscription_id: 1, first: 2, last: 9 });
  const a = await sub.next();
  assert.equal(a.value.text(), "a");
  // Queued behind "b": not told yet.
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(told, []);
  assert.equal((await sub.next()).value.text(), "b");
  const third = sub.next();
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(told, [{ topic: "t", group: "g", first: 2, last: 9 }]);
  fake.push("Deliver", deliver(1, ["c"]));
  assert.equal((await third).value.text(), "c", "the subscription goes on");
  await h.close({ timeoutMs: 0 });
});

test("a room whose log lost events to retention is told as a skipped event naming the room", async () => {
  const fake = fakeBroker({ rooms: [{ room: "news", durable: true }] });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const skipped = new Promise((r) => h.addEventListener("skipped", (e) => r(e.detail), { once: true }));
  h.on("chat", () => {});
  // The first use reads the inbox and, from MyRooms, the room's log with
  // the client id as its group.
  const until = async (f) => {
    while (!f()) await new Promise((r) => setTimeout(r, 1));
  };
  await until(() => fake.subs.has("_room.news"));
  const roomSub = fake.sent.find((m) => m.op === "Subscribe" && m.body.topic === "_room.news");
  assert.equal(roomSub.body.group, "me");
  assert.ok(fake.sent.some((m) => m.op === "Subscribe" && m.body.topic === "_inbox.me" && m.body.group === "inbox"));
  fake.push("Skipped", { subscription_id: fake.subs.get("_room.news"), first: 0, last: 41 });
  assert.deepEqual(await skipped, { room: "news", topic: "_room.news", first: 0, last: 41 });
  await h.close({ timeoutMs: 0 });
});

test("closing while a Subscribe is unanswered ends the subscription and closes cleanly", async () => {
  // Answers the Hello only: the Subscribe stays unanswered.
  const { Fake, sent } = fakeSocket((m) => m.op === "Hello" && helloOk(m, "me"));
  const h = await connect("ws://x/ws", { WebSocket: Fake });
  const closed = new Promise((r) => h.addEventListener("closed", r, { once: true }));
  const sub = h.subscribe("t", { group: "g" });
  await until(() => sent.some((m) => m.op === "Subscribe"), "the Subscribe");
  // It threw a TypeError (the pending Subscribe has no reject) and left
  // the rest of the shutdown undone.
  await h.close({ timeoutMs: 0 });
  await closed;
  assert.deepEqual(await sub.next(), { value: undefined, done: true });
});

test("rooms and the inbox are read with a prefetch window of 4096", async (t) => {
  // With 256, a window that ran out inside a stored batch had the broker
  // send that batch again for its rest: a quarter of what members received
  // in the rooms benchmark (docs/performance.md).
  const fake = fakeBroker({ rooms: [{ room: "news", durable: true }] });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  t.after(() => h.close({ timeoutMs: 0 }));
  h.on("chat", () => {});
  await until(() => fake.subs.has("_room.news") && fake.subs.has("_inbox.me"), "both subscriptions");
  for (const topic of ["_room.news", "_inbox.me"]) {
    const sub = fake.sent.find((m) => m.op === "Subscribe" && m.body.topic === topic);
    assert.equal(sub.body.prefetch_messages, 4096, topic);
  }
});

test("a token provider is asked at connect and on TokenExpiring, and its token is sent in Refresh", async () => {
  const fake = fakeBroker();
  let n = 0;
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake, token: async () => `tok${++n}` });
  assert.equal(fake.sent[0].body.token, "tok1");
  const refreshed = new Promise((r) => h.addEventListener("tokenrefreshed", r, { once: true }));
  fake.push("TokenExpiring", { expires_in_ms: 30000 });
  await refreshed;
  const r = fake.sent.find((m) => m.op === "Refresh");
  assert.deepEqual(r.body, { token: "tok2" });
  await h.close({ timeoutMs: 0 });
});

test("a failing token provider rejects connect with a Token error", async () => {
  const fake = fakeBroker();
  const token = () => Promise.reject(new Error("backend down"));
  await assert.rejects(connect("ws://x/ws", { WebSocket: fake.Fake, token }), (e) => e.code === "Token" && /backend down/.test(e.message));
});

/** A Deliver of room events (key: the event name; headers as the broker
 * writes them) at offsets `first`.. to subscription `id`. */
function events(id, first, list) {
  const batch = buildBatch(
    list.map(({ name, sender = "other", kind = "event", room = "r", payload = "" }) => ({
      key: name,
      payload,
      timestamp: 1,
      headers: [["herald-kind", kind], ["herald-sender", sender], ["herald-room", room]],
    })),
  );
  new DataView(batch.buffer).setBigUint64(0, BigInt(first), true);
  return { subscription_id: id, first_offset: first, last_offset: first + list.length - 1, delivery_count: 1, batch };
}

/** The offsets acked (kind Ack) in what was sent so far. */
const ackedOffsets = (sent) =>
  sent
    .filter((m) => m.op === "Ack" && m.body.kind === "Ack")
    .flatMap((m) => m.body.ranges.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i)));

const until = async (f, what = "condition") => {
  const deadline = Date.now() + 5000;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
};

test("room events reach the handler in order, each acked only once its handler has finished, one handler at a time", async () => {
  const fake = fakeBroker({ rooms: [{ room: "r", durable: true }] });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const seen = [];
  let running = 0;
  let release;
  const gate = new Promise((r) => (release = r));
  h.on("slow", async (ev) => {
    running++;
    assert.equal(running, 1, "handlers never overlap");
    seen.push([ev.name, ev.offset, ev.sender, ev.room, ev.kind, dec(ev.payload)]);
    await gate;
    running--;
  });
  h.on("fast", (ev) => {
    assert.equal(running, 0, "handlers never overlap");
    seen.push([ev.name, ev.offset, ev.sender, ev.room, ev.kind, dec(ev.payload)]);
  });
  await until(() => fake.subs.has("_room.r"), "the room's subscription");
  const sub = fake.subs.get("_room.r");
  fake.push(
    "Deliver",
    events(sub, 10, [
      { name: "fast", payload: "a" },
      { name: "slow", payload: "b", sender: "bob" },
      { name: "fast", payload: "c", room: "other-room" },
    ]),
  );
  await until(() => seen.length === 2, "two events");
  // The first is acked (within the 20 ms acks are gathered); the slow
  // handler has not returned: its event and the one queued behind it are
  // neither handed over nor acked, even after the ack of the first left.
  await until(() => ackedOffsets(fake.sent).length === 1, "the first ack");
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(seen, [
    ["fast", 10, "other", "r", "event", "a"],
    ["slow", 11, "bob", "r", "event", "b"],
  ]);
  assert.deepEqual(ackedOffsets(fake.sent), [10]);
  release();
  await until(() => ackedOffsets(fake.sent).length === 3, "all three acked");
  assert.deepEqual(seen[2], ["fast", 12, "other", "other-room", "event", "c"]);
  assert.deepEqual(ackedOffsets(fake.sent).sort(), [10, 11, 12]);
  await h.close({ timeoutMs: 0 });
});

test("a handler that throws nacks its event (no ack) and the next event is still handled", async () => {
  const fake = fakeBroker({ rooms: [{ room: "r", durable: true }] });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const errors = [];
  h.addEventListener("error", (e) => errors.push(e.detail.context));
  const seen = [];
  h.on("boom", () => {
    throw new Error("handler failed");
  });
  h.on("ok", (ev) => seen.push(ev.offset));
  await until(() => fake.subs.has("_room.r"), "the room's subscription");
  fake.push("Deliver", events(fake.subs.get("_room.r"), 0, [{ name: "boom" }, { name: "ok" }]));
  await until(() => ackedOffsets(fake.sent).length === 1, "the ack");
  assert.deepEqual(seen, [1]);
  assert.deepEqual(ackedOffsets(fake.sent), [1]);
  const nack = fake.sent.find((m) => m.op === "Ack" && typeof m.body.kind === "object");
  assert.deepEqual(nack.body.kind, { Nack: { delay_ms: 1000 } });
  assert.deepEqual(nack.body.ranges, [[0, 0]]);
  assert.deepEqual(errors, ["event handler"]);
  await h.close({ timeoutMs: 0 });
});

test("an event with no handler waits, unacked, until one is added; own presence is acked unseen", async () => {
  const fake = fakeBroker({ rooms: [{ room: "r", durable: true }] });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const presence = [];
  h.onPresence((p) => presence.push(p));
  await until(() => fake.subs.has("_room.r"), "the room's subscription");
  fake.push(
    "Deliver",
    events(fake.subs.get("_room.r"), 0, [
      { name: "join", kind: "presence", sender: "me" },
      { name: "join", kind: "presence", sender: "carol" },
      { name: "later" },
    ]),
  );
  await until(() => ackedOffsets(fake.sent).length === 2, "the presence acks");
  assert.deepEqual(presence, [{ type: "join", clientId: "carol", room: "r" }]);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(ackedOffsets(fake.sent).sort(), [0, 1], "the parked event is not acked");
  const got = [];
  h.on("later", (ev) => got.push(ev.offset));
  await until(() => ackedOffsets(fake.sent).length === 3, "the parked event's ack");
  assert.deepEqual(got, [2]);
  await h.close({ timeoutMs: 0 });
});

test("frames written in one go leave in one WebSocket message, in order", async () => {
  const fake = fakeBroker();
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  await until(() => fake.sends.length === 1, "the Hello");
  const emits = [h.emit("r", "a", "1"), h.emit("r", "b", "2"), h.emit({ client: "c" }, "c", "3")];
  await until(() => fake.sends.length === 2, "the emits");
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(fake.sends.length, 2, "one message for the three");
  assert.deepEqual(
    fake.sent.filter((m) => m.op === "Emit").map((m) => m.body.event),
    ["a", "b", "c"],
  );
  await h.close({ timeoutMs: 0 });
  await Promise.allSettled(emits);
});

test("a redelivery of offsets acked but not yet confirmed is dropped, in order or not", async () => {
  const fake = fakeBroker();
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const sub = h.subscribe("t", { group: "g" });
  await sub.ready;
  fake.push("Deliver", deliver(1, ["a", "b", "c", "d"]));
  const got = [];
  for (let i = 0; i < 4; i++) got.push((await sub.next()).value);
  // Acked out of order, one left unacked: 0, 3 and 1, not 2.
  for (const i of [0, 3, 1]) got[i].ack();
  await until(() => ackedOffsets(fake.sent).length === 3, "the acks sent");
  assert.deepEqual(ackedOffsets(fake.sent).sort(), [0, 1, 3]);
  // The broker has not confirmed them (no Ok): a redelivery of all four
  // hands over only the unacked one.
  fake.push("Deliver", deliver(1, ["a", "b", "c", "d"]));
  const again = (await sub.next()).value;
  assert.equal(again.offset, 2);
  assert.equal(again.text(), "c");
  assert.equal(sub._queue.length, 0, "nothing else handed over");
  await h.close({ timeoutMs: 0 });
});

test("acks are gathered for 20 ms, sent at once at half the prefetch window or for ackConfirmed", async (t) => {
  const fake = fakeBroker();
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const sub = h.subscribe("t", { group: "g", prefetch: 8 });
  await sub.ready;
  fake.push("Deliver", deliver(1, ["a", "b", "c", "d", "e", "f", "g", "h"]));
  const got = [];
  for (let i = 0; i < 8; i++) got.push((await sub.next()).value);
  const tick = () => new Promise((r) => setImmediate(r));
  const ackFrames = () => fake.sent.filter((m) => m.op === "Ack").map((m) => m.body.ranges);
  t.mock.timers.enable({ apis: ["setTimeout"] });
  try {
    for (const m of got.slice(0, 3)) m.ack();
    await tick();
    t.mock.timers.tick(19);
    await tick();
    assert.deepEqual(ackFrames(), [], "three acks, under half the window: held");
    t.mock.timers.tick(1);
    await tick();
    assert.deepEqual(ackFrames(), [[[0, 2]]], "sent together after 20 ms");
    for (const m of got.slice(3, 7)) m.ack();
    await tick();
    assert.deepEqual(ackFrames(), [[[0, 2]], [[3, 6]]], "four pending of a window of 8: sent at once");
    const confirmed = got[7].ackConfirmed();
    await tick();
    assert.deepEqual(ackFrames(), [[[0, 2]], [[3, 6]], [[7, 7]]], "ackConfirmed does not wait");
    confirmed.catch(() => {});
  } finally {
    t.mock.timers.reset();
  }
  await h.close({ timeoutMs: 0 });
});

test("ack frames go without a request id until one in 16 asks for the Ok that confirms them all; closing asks for the rest", async () => {
  const fake = fakeBroker({ answerAcks: true });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const sub = h.subscribe("t", { group: "g", prefetch: 2 });
  await sub.ready;
  const n = UNCONFIRMED_MAX + 1;
  fake.push("Deliver", deliver(1, Array.from({ length: n }, (_, i) => String(i))));
  const got = [];
  for (let i = 0; i < n; i++) got.push((await sub.next()).value);
  const ackFrames = () => fake.sent.filter((m) => m.op === "Ack");
  // A window of 2: each ack is a frame of its own, sent at once.
  for (let i = 0; i < UNCONFIRMED_MAX; i++) {
    got[i].ack();
    await until(() => ackFrames().length === i + 1, `ack frame ${i}`);
  }
  const ids = ackFrames().map((m) => m.requestId);
  assert.ok(ids.slice(0, UNCONFIRMED_MAX - 1).every((id) => id === 0), `ids ${ids}`);
  assert.notEqual(ids[UNCONFIRMED_MAX - 1], 0, "the 16th asks for a confirm");
  // Its Ok confirms every frame before it: the filter lets them go.
  await until(() => sub._sentAcks.length === 0 && !sub._acksPending(), "the confirm");
  got[UNCONFIRMED_MAX].ack();
  await until(() => ackFrames().length === UNCONFIRMED_MAX + 1, "one more frame");
  assert.equal(ackFrames()[UNCONFIRMED_MAX].requestId, 0);
  assert.ok(sub._acksPending(), "an unconfirmed frame is pending");
  // Closing sends it again, asking, and waits for the Ok.
  await h.close({ timeoutMs: 2000 });
  const last = ackFrames()[UNCONFIRMED_MAX + 1];
  assert.notEqual(last.requestId, 0, "closing asks for a confirm");
  assert.deepEqual(last.body.ranges, [[UNCONFIRMED_MAX, UNCONFIRMED_MAX]]);
  assert.equal(sub._sentAcks.length, 0, "confirmed before the client closed");
});

test("an ack made while close() waits asks for a confirm, so close does not wait out its timeout", async () => {
  const fake = fakeBroker({ answerAcks: true });
  const h = await connect("ws://x/ws", { WebSocket: fake.Fake });
  const sub = h.subscribe("t", { group: "g", prefetch: 2 });
  await sub.ready;
  fake.push("Deliver", deliver(1, ["a", "b"]));
  const a = (await sub.next()).value;
  const b = (await sub.next()).value;
  a.ack();
  const ackFrames = () => fake.sent.filter((m) => m.op === "Ack");
  await until(() => ackFrames().length === 1, "the first ack");
  const started = Date.now();
  const closed = h.close({ timeoutMs: 3000 });
  b.ack(); // the app's loop still runs while close waits
  await closed;
  assert.ok(Date.now() - started < 1500, `close took ${Date.now() - started} ms`);
  assert.ok(ackFrames().slice(1).every((m) => m.requestId !== 0), "frames sent while closing ask for a confirm");
  assert.equal(sub._sentAcks.length, 0, "both acks confirmed before the client closed");
});

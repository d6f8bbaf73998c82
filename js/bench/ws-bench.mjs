// Measurements of the WebSocket transport (docs/performance.md):
//
//   node bench/ws-bench.mjs idle HTTP_ADDR BROKER_PID N [ROOM_SIZE]
//     N idle WebSocket sessions (Hello; with ROOM_SIZE, each joins a room of
//     that many members), and the broker's resident memory before and after
//     (after SETTLE_MS, default 40 s: jemalloc gives freed pages back after
//     about 10 s, and the idle sessions have been pinged a few times). TRANSPORT=tcp with the TCP address: the same over TCP.
//
//   node bench/ws-bench.mjs rooms HTTP_ADDR MEMBERS SECONDS [WINDOW] [THREADS]
//     The rooms workload: one emitter (herald-client, WINDOW emits in flight,
//     default 64, each resolved once durable) and a room of MEMBERS
//     members, each its own herald-client WebSocket connection with an
//     on() handler; prints deliveries per second. With THREADS >= 1 the
//     members are spread round-robin over that many worker threads of
//     this process, the emitter staying on the main thread (default 0:
//     all on the main thread, which then bounds the run: see
//     docs/performance.md).
//
//   node bench/ws-bench.mjs catchup HTTP_ADDR MEMBERS COUNT
//     MEMBERS durable members of a room go away (their clients close), one
//     emitter sends COUNT events (64 in flight), then every member comes
//     back at once (a new client with the same id, an on() handler): the
//     events per second they catch up at, all members together, from their
//     connects to the last event. Past the broker's tail cache (8 MiB, about
//     40,000 events of 100 bytes) they read the room's log from disk.
//     STAGGER_MS=D: member i comes back i*D ms after the first (they are
//     then spread over the backlog instead of together).
//
//   node bench/ws-bench.mjs latency TCP_ADDR HTTP_ADDR RATE SECONDS
//     Publish-to-deliver latency at RATE msg/s, once over TCP and once over
//     WebSocket, with the same code (raw frames from js/src/codec.js): one
//     publisher connection, one ephemeral subscriber connection, each record
//     carrying its send time.
//
// Run against a release broker on this machine only.

import net from "node:net";
import { readFileSync } from "node:fs";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import WebSocket from "ws";
import { encodeFrame, FrameDecoder, decodeMessage } from "../src/codec.js";
import { buildBatch } from "../src/batch.js";
import { connect } from "../src/index.js";

const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A raw frame connection over TCP or WebSocket: send(bytes), onMessage(cb). */
function open(kind, addr) {
  return new Promise((resolve, reject) => {
    const dec = new FrameDecoder();
    // Pings answered, as any client does: the broker closes a session
    // that stays silent for three heartbeats.
    const conn = { handlers: [(m) => m.op === "Ping" && conn.send(encodeFrame("Pong", m.requestId))], send: null, close: null };
    const feed = (bytes) => {
      dec.push(bytes);
      for (let f = dec.next(); f; f = dec.next()) {
        const m = decodeMessage(f);
        for (const h of conn.handlers) h(m);
      }
    };
    if (kind === "tcp") {
      const [host, port] = addr.split(":");
      const s = net.connect({ host, port: Number(port), noDelay: true }, () => resolve(conn));
      s.on("data", (d) => feed(new Uint8Array(d.buffer, d.byteOffset, d.length)));
      s.on("error", reject);
      conn.send = (b) => s.write(b);
      conn.close = () => s.destroy();
    } else {
      const ws = new WebSocket(`ws://${addr}/ws`, { perMessageDeflate: false });
      ws.binaryType = "arraybuffer";
      ws.on("open", () => resolve(conn));
      ws.on("message", (d) => feed(new Uint8Array(d)));
      ws.on("error", reject);
      conn.send = (b) => ws.send(b);
      conn.close = () => ws.terminate();
    }
  });
}

/** Sends a request and resolves with the reply of its id. */
function request(conn, op, id, body) {
  return new Promise((resolve, reject) => {
    const h = (m) => {
      if (m.requestId !== id || m.op === "Deliver") return;
      conn.handlers.splice(conn.handlers.indexOf(h), 1);
      if (m.op === "Error") reject(new Error(m.body.message));
      else resolve(m);
    };
    conn.handlers.push(h);
    conn.send(encodeFrame(op, id, body));
  });
}

const hello = (clientId) => ({ min_version: 1, max_version: 1, client_name: "ws-bench", client_id: clientId, token: null });

async function idle(http, pid, n, roomSize) {
  // TRANSPORT=tcp (with the TCP address) measures TCP sessions the same way.
  const kind = process.env.TRANSPORT ?? "ws";
  await sleep(500);
  const before = rssKiB(pid);
  const conns = [];
  const t0 = Date.now();
  const tag = Math.random().toString(36).slice(2, 7);
  for (let i = 0; i < n; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 200); j++) {
      batch.push(
        (async () => {
          const c = await open(kind, http);
          await request(c, "Hello", 1, hello(`idle-${tag}-${j}`));
          if (roomSize) await request(c, "Join", 2, { room: `room-${tag}-${Math.floor(j / roomSize)}`, durable: false, history: 0 });
          conns.push(c);
        })(),
      );
    }
    await Promise.all(batch);
  }
  const setup = (Date.now() - t0) / 1000;
  // Let presence appends and writers settle, and the allocator give back
  // what the set-up freed (jemalloc returns dirty pages after ~10 s), then
  // sample a few times.
  await sleep(Number(process.env.SETTLE_MS ?? 40000));
  const samples = [];
  for (let i = 0; i < 3; i++) {
    samples.push(rssKiB(pid));
    await sleep(1000);
  }
  const after = Math.max(...samples);
  const what = roomSize ? `each joined to a room of ${roomSize}` : "handshaken, no room";
  console.log(`${n} idle ${kind === "ws" ? "WebSocket" : "TCP"} sessions (${what}), set up in ${setup.toFixed(1)} s: broker RSS ${before} KiB -> ${after} KiB, ${((after - before) / n).toFixed(2)} KiB per session`);
  for (const c of conns) c.close();
  await sleep(500);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function latency(kind, addr, rate, seconds) {
  const topic = `lat-${kind}-${Math.random().toString(36).slice(2, 7)}`;
  const pub = await open(kind, addr);
  const sub = await open(kind, addr);
  await request(pub, "Hello", 1, hello(null));
  await request(sub, "Hello", 1, hello(null));
  await request(pub, "CreateTopic", 2, { name: topic, config: { retention_bytes: null, retention_ms: null, segment_bytes: null, fsync: null }, replicas: 0 });
  const lat = [];
  const total = rate * seconds;
  const warm = Math.min(rate, 2000); // the first second is not counted
  let received = 0;
  let subId = null;
  let done;
  const finished = new Promise((r) => (done = r));
  sub.handlers.push((m) => {
    if (m.op !== "Deliver" || m.body.subscription_id !== subId) return;
    const now = performance.timeOrigin + performance.now();
    const n = m.body.last_offset - m.body.first_offset + 1;
    for (const r of m.body.parsed.records) {
      if (r.offset < m.body.first_offset || r.offset > m.body.last_offset) continue;
      const sent = new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true);
      if (r.offset >= warm) lat.push(now - sent);
    }
    received += n;
    sub.send(encodeFrame("Flow", 0, { subscription_id: subId, messages: n, bytes: m.body.batch.length }));
    if (received >= total) done();
  });
  const ok = await request(sub, "Subscribe", 3, {
    topic, group: null, start: "Earliest", prefetch_messages: 10000, prefetch_bytes: 64 << 20, ack_timeout_ms: 0, max_deliveries: 0,
  });
  subId = ok.body.subscription_id;
  // Paced: every millisecond tick, publish what the schedule says is due.
  const payload = new Uint8Array(100);
  const t0 = performance.now();
  let sent = 0;
  let id = 10;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
    while (sent < due) {
      new DataView(payload.buffer).setFloat64(0, performance.timeOrigin + performance.now(), true);
      const batch = buildBatch([{ payload, timestamp: Date.now() }]);
      pub.send(encodeFrame("Publish", id++, { topic, batch }));
      sent++;
    }
    await sleep(1);
  }
  await Promise.race([finished, sleep(30000)]);
  lat.sort((a, b) => a - b);
  const ms = (x) => x.toFixed(2);
  console.log(
    `${kind.padEnd(3)} ${rate} msg/s for ${seconds} s: ${lat.length} measured, p50 ${ms(percentile(lat, 50))} ms, p99 ${ms(percentile(lat, 99))} ms, p99.9 ${ms(percentile(lat, 99.9))} ms, max ${ms(lat[lat.length - 1])} ms`,
  );
  pub.close();
  sub.close();
  return percentile(lat, 99);
}

/** Emits "tick" events to `room`, `window` in flight (each resolved once
 * durable), while `more(sent)`; resolves with the number sent once all
 * are confirmed. */
async function emitInWindow(emitter, room, payload, window, more) {
  let sent = 0;
  const inflight = new Set();
  while (more(sent)) {
    while (inflight.size < window && more(sent)) {
      const p = emitter.emit({ room }, "tick", payload).then(() => inflight.delete(p));
      inflight.add(p);
      sent++;
    }
    if (inflight.size > 0) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  return sent;
}

/** Room members with the client ids `ids`, each its own connection
 * joined to `room`, counting the "tick" events they are handed. */
async function joinMembers(url, room, ids) {
  const m = { delivered: 0, clients: [] };
  for (const id of ids) {
    const c = await connect(url, { WebSocket, clientId: id });
    c.on("tick", () => {
      m.delivered++;
    });
    await c.join(room);
    m.clients.push(c);
  }
  return m;
}

/** A worker thread holding some of the members: it joins them, then
 * answers "count" with what they were handed and "close" by closing them. */
async function memberThread({ url, room, ids }) {
  const m = await joinMembers(url, room, ids);
  parentPort.on("message", async (msg) => {
    if (msg === "count") parentPort.postMessage(m.delivered);
    if (msg === "close") {
      for (const c of m.clients) await c.close({ timeoutMs: 1000 });
      parentPort.postMessage("closed");
    }
  });
  parentPort.postMessage("joined");
}

/** The members of `room`, on this thread (`threads` 0) or spread over
 * `threads` worker threads: `count()` resolves with the events handed to
 * all of them so far, `close()` closes them. */
async function startMembers(url, room, ids, threads) {
  if (threads === 0) {
    const m = await joinMembers(url, room, ids);
    return {
      count: async () => m.delivered,
      close: async () => {
        for (const c of m.clients) await c.close({ timeoutMs: 1000 });
      },
    };
  }
  const reply = (w) =>
    new Promise((resolve, reject) => {
      const fail = (e) => reject(e);
      w.once("error", fail);
      w.once("message", (m) => {
        w.off("error", fail);
        resolve(m);
      });
    });
  const workers = [];
  for (let t = 0; t < threads; t++) {
    const share = ids.filter((_, i) => i % threads === t);
    const w = new Worker(new URL(import.meta.url), { workerData: { url, room, ids: share } });
    await reply(w);
    workers.push(w);
  }
  const ask = async (msg) =>
    Promise.all(
      workers.map((w) => {
        const r = reply(w);
        w.postMessage(msg);
        return r;
      }),
    );
  return {
    count: async () => (await ask("count")).reduce((a, b) => a + b, 0),
    close: async () => {
      await ask("close");
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

async function rooms(http, members, seconds, window, threads) {
  const tag = Math.random().toString(36).slice(2, 7);
  const room = `bench-${tag}`;
  const url = `ws://${http}/ws`;
  const ids = Array.from({ length: members }, (_, i) => `m-${tag}-${i}`);
  const group = await startMembers(url, room, ids, threads);
  const emitter = await connect(url, { WebSocket, clientId: `e-${tag}` });
  const payload = new Uint8Array(100);
  await sleep(1000); // presence of the joins delivered and acked
  const before = await group.count();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const emits = await emitInWindow(emitter, room, payload, window, () => performance.now() < end);
  const want = before + emits * members;
  const deadline = performance.now() + 60000;
  let delivered = await group.count();
  while (delivered < want && performance.now() < deadline) {
    await sleep(10);
    delivered = await group.count();
  }
  const secs = (performance.now() - t0) / 1000;
  const where = threads === 0 ? "members on the emitter's thread" : `members on ${threads} worker thread${threads === 1 ? "" : "s"}`;
  console.log(
    `rooms over WebSocket: 1 emitter, room of ${members}, ${window} emits in flight, ${where}: ${emits} durable emits, ${delivered - before} deliveries in ${secs.toFixed(1)} s = ${((delivered - before) / secs).toFixed(0)} deliveries/s (${(emits / secs).toFixed(0)} emits/s)`,
  );
  await group.close();
  await emitter.close({ timeoutMs: 1000 });
  if (delivered !== want) process.exit(1);
}

async function catchup(http, members, count) {
  const tag = Math.random().toString(36).slice(2, 7);
  const room = `bench-${tag}`;
  const url = `ws://${http}/ws`;
  const ids = Array.from({ length: members }, (_, i) => `m-${tag}-${i}`);
  for (const id of ids) {
    const c = await connect(url, { WebSocket, clientId: id });
    await c.joinDurable(room);
    await c.close({ timeoutMs: 1000 });
  }
  const emitter = await connect(url, { WebSocket, clientId: `e-${tag}` });
  const payload = new Uint8Array(100);
  const e0 = performance.now();
  await emitInWindow(emitter, room, payload, 64, (sent) => sent < count);
  const emitSecs = (performance.now() - e0) / 1000;
  await emitter.close({ timeoutMs: 1000 });
  let delivered = 0;
  const want = count * members;
  let done;
  const all = new Promise((resolve) => (done = resolve));
  const t0 = performance.now();
  const stagger = Number(process.env.STAGGER_MS ?? 0);
  const clients = await Promise.all(
    ids.map(async (id, i) => {
      if (stagger > 0) await sleep(i * stagger);
      const c = await connect(url, { WebSocket, clientId: id });
      c.on("tick", () => {
        if (++delivered === want) done();
      });
      return c;
    }),
  );
  const timeout = setTimeout(() => done(), 120000);
  await all;
  clearTimeout(timeout);
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `catch-up over WebSocket: ${members} durable members back after ${count} events (emitted at ${(count / emitSecs).toFixed(0)}/s): ${delivered} of ${want} events in ${secs.toFixed(2)} s = ${(delivered / secs).toFixed(0)} events/s`,
  );
  for (const c of clients) await c.close({ timeoutMs: 1000 });
  if (delivered !== want) process.exit(1);
}

const [cmd, ...args] = isMainThread ? process.argv.slice(2) : ["member-thread"];
if (cmd === "member-thread") {
  await memberThread(workerData);
} else if (cmd === "idle") {
  const [http, pid, n, roomSize] = args;
  await idle(http, Number(pid), Number(n), roomSize ? Number(roomSize) : 0);
} else if (cmd === "rooms") {
  const [http, members, seconds, window = "64", threads = "0"] = args;
  if (!(Number(window) >= 1)) throw new Error(`WINDOW must be a number >= 1, not ${window}`);
  if (!Number.isInteger(Number(threads)) || Number(threads) < 0) throw new Error(`THREADS must be a whole number, not ${threads}`);
  await rooms(http, Number(members), Number(seconds), Number(window), Number(threads));
} else if (cmd === "catchup") {
  const [http, members, count] = args;
  await catchup(http, Number(members), Number(count));
} else if (cmd === "latency") {
  const [tcp, http, rate, seconds] = args;
  const t = await latency("tcp", tcp, Number(rate), Number(seconds));
  const w = await latency("ws", http, Number(rate), Number(seconds));
  console.log(`p99 WebSocket / TCP = ${(w / t).toFixed(2)}`);
} else {
  console.error("usage: ws-bench.mjs idle HTTP_ADDR BROKER_PID N [ROOM_SIZE] | rooms HTTP_ADDR MEMBERS SECONDS [WINDOW] [THREADS] | catchup HTTP_ADDR MEMBERS COUNT | latency TCP_ADDR HTTP_ADDR RATE SECONDS");
  process.exit(2);
}
if (isMainThread) process.exit(0);

// The Socket.IO side of `herald bench rooms`: N members in one room (or
// spread round-robin over `rooms` rooms), one emitter sending `count` events
// with at most `window` unacknowledged, round-robin over the rooms, each
// broadcast by server.js to its room (except the sender) and acked to the
// emitter. Measures deliveries/s = the events the members received / (time
// from the first emit until the last member received its last event) and emit-to-deliver
// latency over all deliveries, and prints them as `herald bench rooms` does.
// `warmup` events go first, unmeasured, so that V8 has compiled the hot
// paths of both the server and the clients (a fresh server is interpreted
// for its first thousands of packets).
//
// Usage: node bench.js [--url http://127.0.0.1:3000] [--members 10]
//          [--rooms 1] [--count 10000] [--size 100] [--window 1] [--workers 0]
//          [--warmup EVENTS] [--binary] [--timeout 60] [--json]
"use strict";

const { fork } = require("node:child_process");
const path = require("node:path");
const { io } = require("socket.io-client");
const { Histogram } = require("./hist");
const { nowUs, payload } = require("./clock");
const { startMembers } = require("./members");

const USAGE =
  "usage: node bench.js [--url URL] [--members N] [--rooms R] [--count EVENTS] [--size BYTES]\n" +
  "         [--window K] [--workers W] [--warmup EVENTS] [--binary] [--timeout SECS] [--json]";

/** Deliveries the default warm-up makes (spread over the members' events). */
const WARMUP_DELIVERIES = 50000;

function parseArgs(argv) {
  const o = {
    url: "http://127.0.0.1:3000",
    members: 10,
    rooms: 1,
    count: 10000,
    size: 100,
    window: 1,
    workers: 0,
    warmup: -1, // default: WARMUP_DELIVERIES / members events, at least 5
    binary: false,
    timeout: 60,
    json: false,
  };
  const numeric = new Set(["members", "rooms", "count", "size", "window", "workers", "warmup", "timeout"]);
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, "");
    if (name === "json" || name === "binary") {
      o[name] = true;
    } else if (name === "url" && argv[i + 1] !== undefined) {
      o.url = argv[++i];
    } else if (numeric.has(name) && argv[i + 1] !== undefined) {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} takes a whole number, not ${argv[i]}`);
      o[name] = v;
    } else {
      throw new Error(`unknown argument ${argv[i]}\n${USAGE}`);
    }
  }
  if (o.members < 1 || o.rooms < 1 || o.window < 1 || o.timeout < 1) {
    throw new Error("--members, --rooms, --window and --timeout must be at least 1");
  }
  if (o.rooms > o.members) throw new Error(`--rooms ${o.rooms} is more than --members ${o.members}: a room would be empty`);
  // Each event reaches one room: members / rooms members.
  if (o.warmup < 0) o.warmup = Math.max(5 * o.rooms, Math.ceil((WARMUP_DELIVERIES * o.rooms) / o.members));
  return o;
}

/** Members in a forked worker process, behind the same interface as startMembers. */
function workerMembers(spec) {
  const child = fork(path.join(__dirname, "members.js"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  let received = 0;
  const phase = () => {
    const p = {};
    p.promise = new Promise((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
    });
    p.promise.catch(() => {}); // observed later by run()
    return p;
  };
  const ready = phase();
  const warm = phase();
  const done = phase();
  const onFail = (err) => [ready, warm, done].forEach((p) => p.reject(err));
  child.on("message", (m) => {
    if (m.type === "ready") ready.resolve();
    else if (m.type === "warm") warm.resolve();
    else if (m.type === "progress") received = m.received;
    else if (m.type === "error") onFail(new Error(m.message));
    else if (m.type === "done") {
      received = m.received;
      const hist = new Histogram();
      hist.addSparse(m.hist);
      done.resolve({ received: m.received, lastUs: m.lastUs, hist });
    }
  });
  child.on("exit", (code) => onFail(new Error(`a member worker exited (code ${code})`)));
  child.send({ type: "start", ...spec });
  return {
    ready: ready.promise,
    warm: warm.promise,
    done: done.promise,
    received: () => received,
    close: () => child.kill(),
  };
}

/** Splits `members` over `workers` processes (0: in this process); member
 * i (counted over all processes) is in room i % rooms. */
function startGroups(o, rooms) {
  const spec = (first, n) => ({ url: o.url, rooms, first, members: n, warmup: o.warmup, count: o.count });
  if (o.workers === 0) return [startMembers(spec(0, o.members))];
  const groups = [];
  const w = Math.min(o.workers, o.members);
  let first = 0;
  for (let i = 0; i < w; i++) {
    const n = Math.floor(o.members / w) + (i < o.members % w ? 1 : 0);
    groups.push(workerMembers(spec(first, n)));
    first += n;
  }
  return groups;
}

function connectEmitter(url) {
  return new Promise((resolve, reject) => {
    const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    s.once("connect", () => resolve(s));
    s.once("connect_error", (err) => reject(new Error(`cannot reach a Socket.IO server at ${url}: ${err.message}`)));
  });
}

/**
 * Emits events `first` .. `first + n - 1`, event k to room k % rooms, at
 * most `o.window` unacked; resolves with the emit-to-ack histogram once all
 * are acked.
 */
function emitAll(socket, rooms, o, first, n) {
  const acks = new Histogram();
  return new Promise((resolve) => {
    let sent = 0;
    let acked = 0;
    let inflight = 0;
    const pump = () => {
      while (inflight < o.window && sent < n) {
        const t = Math.round(nowUs());
        inflight += 1;
        const seq = first + sent;
        socket.emit("emit", rooms[seq % rooms.length], payload(o.size, t, seq, o.binary), () => {
          acks.record(nowUs() - t);
          inflight -= 1;
          acked += 1;
          if (acked === n) resolve(acks);
          else pump();
        });
        sent += 1;
      }
    };
    if (n === 0) resolve(acks);
    else pump();
  });
}

/** Rejects when the emitter's connection drops. */
function lost(socket) {
  return new Promise((_, reject) => {
    socket.on("disconnect", (reason) => {
      if (reason !== "io client disconnect") reject(new Error(`the emitter lost its connection: ${reason}`));
    });
  });
}

/** Rejects if the members' delivery count stops moving for `secs`. */
function stallGuard(groups, secs) {
  let timer;
  const guard = new Promise((_, reject) => {
    let last = -1;
    let still = 0;
    timer = setInterval(() => {
      const now = groups.reduce((sum, g) => sum + g.received(), 0);
      still = now === last ? still + 1 : 0;
      last = now;
      if (still >= secs) reject(new Error(`no delivery for ${secs} s (${now} received)`));
    }, 1000);
  });
  return { guard, stop: () => clearInterval(timer) };
}

async function run(o) {
  const tag = Math.floor(Math.random() * 2 ** 32).toString(16);
  const rooms = Array.from({ length: o.rooms }, (_, r) => `bench-room-${tag}-${r}`);
  const groups = startGroups(o, rooms);
  const closeAll = () => groups.forEach((g) => g.close());
  try {
    await Promise.all(groups.map((g) => g.ready));
    const emitter = await connectEmitter(o.url);
    const stall = stallGuard(groups, o.timeout);
    const failures = Promise.race([stall.guard, lost(emitter)]);
    try {
      await Promise.race([
        Promise.all([emitAll(emitter, rooms, o, 0, o.warmup), ...groups.map((g) => g.warm)]),
        failures,
      ]);
      const t0 = nowUs();
      const [acks, results] = await Promise.race([
        Promise.all([emitAll(emitter, rooms, o, o.warmup, o.count), Promise.all(groups.map((g) => g.done))]),
        failures,
      ]);
      return report(o, t0, acks, results);
    } finally {
      stall.stop();
      emitter.disconnect();
    }
  } finally {
    closeAll();
  }
}

function report(o, t0, acks, results) {
  const deliver = new Histogram();
  let received = 0;
  let lastUs = t0;
  for (const r of results) {
    deliver.add(r.hist);
    received += r.received;
    lastUs = Math.max(lastUs, r.lastUs);
  }
  const secs = Math.max(1e-9, (lastUs - t0) / 1e6);
  return {
    deliveries: received,
    members: o.members,
    rooms: o.rooms,
    emitted: o.count,
    secs,
    msgs_per_sec: received / secs,
    mib_per_sec: (received * o.size) / secs / 2 ** 20,
    latency_kind: "emit-to-deliver",
    latency: deliver.json(),
    latency_line: deliver.line(),
    confirm_latency: acks.json(),
    mode: "rooms",
    size: o.size,
    fsync: "none (in memory)",
    producers: 1,
    consumers: o.members,
    peer: `socket.io ${require("socket.io-client/package.json").version}`,
    window: o.window,
    workers: o.workers,
    warmup: o.warmup,
    payload: o.binary ? "binary" : "json",
  };
}

function printHuman(r) {
  console.log(
    `${r.mode} ${r.size} B x ${r.deliveries}: ${r.msgs_per_sec.toFixed(0)} msgs/s, ` +
      `${r.mib_per_sec.toFixed(1)} MiB/s in ${r.secs.toFixed(2)} s (fsync ${r.fsync})`,
  );
  console.log(`  ${r.latency_kind}: ${r.latency_line}`);
  const c = r.confirm_latency;
  console.log(`  emit-to-ack: p50 ${c.p50_us} us  p99 ${c.p99_us} us  max ${c.max_us} us`);
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(err.message);
    process.exit(2);
  }
  try {
    const r = await run(o);
    if (o.json) console.log(JSON.stringify(r));
    else printHuman(r);
    process.exit(0);
  } catch (err) {
    console.error(`socket.io bench: ${err.message}`);
    process.exit(1);
  }
}

main();

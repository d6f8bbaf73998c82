// Room members for bench.js: N socket.io-client connections (websocket
// transport only, each its own connection) that join their room (member i,
// counted from `first`, joins rooms[i % rooms.length]) and count the
// "event"s they receive, recording emit-to-deliver latency from the send
// time each payload carries. The first `warmup` events (sequence numbers
// below it) warm the JIT up and are not measured.
//
// Used in the emitter's process (bench.js --workers 0) or as a forked worker
// process (bench.js --workers W), driven over IPC:
//   parent -> worker  {type: "start", url, rooms, first, members, warmup, count}
//   worker -> parent  {type: "ready"} once every member has joined,
//                     {type: "warm"} once every member got the warm-up,
//                     {type: "progress", received} every 500 ms (all events),
//                     {type: "done", received, lastUs, hist} when every member
//                     got `count` events, {type: "error", message}.
"use strict";

const { io } = require("socket.io-client");
const { Histogram } = require("./hist");
const { nowUs, sentAt, seqOf } = require("./clock");

/** Connections opened at once while joining; more overflows accept queues. */
const CONNECT_CONCURRENCY = 200;

function connectMember(url, room, onEvent) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true, // one connection per member, as separate browsers
      reconnection: false, // a dropped member is an error, not a retry
      timeout: 30000,
    });
    socket.on("event", onEvent);
    socket.once("connect_error", (err) => reject(new Error(`a member cannot connect to ${url}: ${err.message}`)));
    socket.once("connect", () => {
      socket.emit("join", room, () => resolve(socket));
    });
  });
}

/** Events below sequence `seq` that go to room `r` of `n` (the emitter
 * sends event k to room k % n). */
function eventsBelow(seq, r, n) {
  return seq > r ? Math.floor((seq - r - 1) / n) + 1 : 0;
}

/**
 * Connects `members` members, member i (counted from `first`) to room
 * rooms[i % rooms.length]. The events are numbered 0 .. warmup + count - 1,
 * event k goes to room k % rooms.length, and the first `warmup` are the
 * warm-up; each member expects those of its room. Returns {ready, warm,
 * done, received(), close()}: `ready` resolves once all have joined, `warm` once all got the warm-up, `done` with
 * {received, lastUs, hist} once all got every measured event (lastUs: when
 * the last one arrived); `warm` and `done` reject if a member drops.
 * received() counts every event, warm-up included (progress).
 */
function startMembers({ url, rooms, first, members, warmup, count }) {
  const hist = new Histogram();
  const sockets = [];
  let received = 0;
  let seen = 0;
  let lastUs = 0;
  let warmed = 0;
  let complete = 0;
  let finish;
  let warmedUp;
  let failWarm;
  let failDone;
  const warm = new Promise((resolve, reject) => {
    warmedUp = resolve;
    failWarm = reject;
  });
  const done = new Promise((resolve, reject) => {
    finish = resolve;
    failDone = reject;
  });
  const fail = (err) => {
    failWarm(err);
    failDone(err);
  };
  // Observed by the caller; avoid an unhandled rejection before it looks.
  warm.catch(() => {});
  done.catch(() => {});

  const member = (r) => {
    const n = rooms.length;
    const myWarmup = eventsBelow(warmup, r, n);
    const myCount = eventsBelow(warmup + count, r, n) - myWarmup;
    // A member whose room gets no warm-up (or no measured) event is done
    // with that phase from the start.
    if (myWarmup === 0) warmed += 1;
    if (myCount === 0) complete += 1;
    let got = 0;
    let w = 0;
    return (payload) => {
      const now = nowUs();
      seen += 1;
      if (seqOf(payload) < warmup) {
        w += 1;
        if (w === myWarmup) {
          warmed += 1;
          if (warmed === members) warmedUp();
        }
        return;
      }
      hist.record(now - sentAt(payload));
      received += 1;
      got += 1;
      if (got === myCount) {
        lastUs = Math.max(lastUs, now);
        complete += 1;
        if (complete === members) finish({ received, lastUs, hist });
      }
    };
  };

  const ready = (async () => {
    for (let i = 0; i < members; i += CONNECT_CONCURRENCY) {
      const batch = [];
      for (let j = i; j < Math.min(members, i + CONNECT_CONCURRENCY); j++) {
        const r = (first + j) % rooms.length;
        batch.push(connectMember(url, rooms[r], member(r)));
      }
      for (const s of await Promise.all(batch)) {
        s.on("disconnect", (reason) => {
          if (reason !== "io client disconnect") fail(new Error(`a member lost its connection: ${reason}`));
        });
        sockets.push(s);
      }
    }
    if (warmed === members) warmedUp();
    if (complete === members) finish({ received, lastUs, hist });
  })();

  return {
    ready,
    warm,
    done,
    received: () => seen,
    close: () => {
      for (const s of sockets) s.disconnect();
    },
  };
}

function runAsWorker() {
  let group;
  let timer;
  const send = (m) => process.send(m);
  process.on("message", async (m) => {
    if (m.type !== "start") return;
    try {
      group = startMembers(m);
      await group.ready;
      send({ type: "ready" });
      timer = setInterval(() => send({ type: "progress", received: group.received() }), 500);
      await group.warm;
      send({ type: "warm" });
      const r = await group.done;
      clearInterval(timer);
      send({ type: "done", received: r.received, lastUs: r.lastUs, hist: r.hist.toSparse() });
      group.close();
      process.disconnect();
    } catch (err) {
      clearInterval(timer);
      send({ type: "error", message: err.message });
      if (group) group.close();
      process.disconnect();
    }
  });
  process.on("disconnect", () => process.exit(0));
}

if (require.main === module) runAsWorker();

module.exports = { startMembers };

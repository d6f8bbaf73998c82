// Send times and payloads shared by the emitter and the members, which may
// be in different processes: times are microseconds of CLOCK_MONOTONIC
// (process.hrtime), which every process on the machine reads alike.
// performance.now() is cheaper per call than hrtime.bigint() (no BigInt),
// and runs on the same clock, so it is used with a per-process offset.
"use strict";

const { performance } = require("node:perf_hooks");

const offsetUs = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;

/** Microseconds on the machine-wide monotonic clock. */
function nowUs() {
  return performance.now() * 1000 + offsetUs;
}

/**
 * A payload of about `size` bytes on the wire carrying send time `t` (us)
 * and sequence `seq`. JSON (the usual Socket.IO payload): {t, s, p} with p
 * padding; binary: a Buffer of `size` bytes, t and seq as float64 LE first,
 * which Socket.IO sends as an attachment (a second WebSocket frame).
 */
function payload(size, t, seq, binary) {
  if (binary) {
    const b = Buffer.alloc(Math.max(16, size), 0x78);
    b.writeDoubleLE(t, 0);
    b.writeDoubleLE(seq, 8);
    return b;
  }
  const bare = JSON.stringify({ t, s: seq, p: "" }).length;
  return { t, s: seq, p: "x".repeat(Math.max(0, size - bare)) };
}

function field(p, at, key) {
  if (p instanceof Uint8Array) return Buffer.from(p.buffer, p.byteOffset, p.byteLength).readDoubleLE(at);
  if (p instanceof ArrayBuffer) return Buffer.from(p).readDoubleLE(at);
  return p[key];
}

/** The send time in a payload made by `payload`. */
function sentAt(p) {
  return field(p, 0, "t");
}

/** The sequence number in a payload made by `payload`. */
function seqOf(p) {
  return field(p, 8, "s");
}

module.exports = { nowUs, payload, sentAt, seqOf };

// The WebSocket bench (bench/ws-bench.mjs) against a real broker, each
// mode briefly: its figures are the ones docs/performance.md reports, and
// it builds some request bodies by hand, so a protocol change it missed
// (the latency mode's CreateTopic lacked `replicas` for days) must fail
// here rather than on the day someone measures.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Broker } from "../support/broker.js";

const bench = fileURLToPath(new URL("../../bench/ws-bench.mjs", import.meta.url));
let broker;

before(async () => {
  broker = await Broker.start();
});
after(async () => {
  await broker?.close();
  await Broker.killAll();
});

/** Runs the bench with `args`; resolves with its output, rejects on a
 * failure or after 60 s. */
function run(args, env = {}) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [bench, ...args], { timeout: 60000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ws-bench ${args.join(" ")} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

test("the latency mode measures both transports", async () => {
  const out = await run(["latency", broker.tcp, broker.http, "1000", "2"]);
  assert.match(out, /^tcp +1000 msg\/s for 2 s: 1000 measured, p50 [\d.]+ ms, p99 [\d.]+ ms/m);
  assert.match(out, /^ws +1000 msg\/s for 2 s: 1000 measured, p50 [\d.]+ ms, p99 [\d.]+ ms/m);
  assert.match(out, /^p99 WebSocket \/ TCP = \d+\.\d\d$/m);
});

test("the idle mode opens sessions in rooms and reads the broker's memory", async () => {
  const out = await run(["idle", broker.http, String(broker.child.pid), "20", "5"], { SETTLE_MS: "0" });
  assert.match(out, /^20 idle WebSocket sessions \(each joined to a room of 5\), set up in [\d.]+ s: broker RSS \d+ KiB -> \d+ KiB, -?[\d.]+ KiB per session$/m);
});

test("the rooms mode delivers every emit to every member", async () => {
  // It exits non-zero when a member missed a delivery.
  const out = await run(["rooms", broker.http, "5", "1", "8", "1"]);
  assert.match(out, /room of 5, 8 emits in flight, members on 1 worker thread: \d+ durable emits, \d+ deliveries in [\d.]+ s = \d+ deliveries\/s/);
});

test("the catch-up mode brings members back to a backlog", async () => {
  const out = await run(["catchup", broker.http, "3", "500"]);
  assert.match(out, /3 durable members back after 500 events .*: 1500 of 1500 events in [\d.]+ s = \d+ events\/s/);
});

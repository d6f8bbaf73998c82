// The JavaScript client against a real `herald serve --jwt-secret-file`:
// tokens minted with the `herald token` CLI of the same binary, the client
// id bound to the token's sub, refusals, a token provider refreshing short
// tokens while a subscription flows, and a refused publish that leaves the
// connection usable.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { connect, HeraldError } from "../../src/index.js";
import { Broker, mintToken } from "../support/broker.js";
import { nextEvent } from "../support/proxy.js";

let broker, dir, secret, otherSecret;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "herald-js-auth-"));
  secret = join(dir, "jwt.secret");
  otherSecret = join(dir, "other.secret");
  writeFileSync(secret, randomBytes(32).toString("base64"));
  writeFileSync(otherSecret, randomBytes(32).toString("base64"));
  // No leeway: a token's life is what its exp says.
  broker = await Broker.start(["--jwt-secret-file", secret, "--jwt-leeway-ms", "0"]);
});
after(async () => {
  await broker?.close();
  await Broker.killAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const opts = (o = {}) => ({ WebSocket, reconnectInitialMs: 20, reconnectMaxMs: 200, ...o });
const uniq = (p) => `${p}-${Math.random().toString(36).slice(2, 8)}`;
const token = (sub, ...args) => mintToken(["--secret-file", secret, "--sub", sub, ...args]);

test("a good token connects, and the client id is the token's sub", { timeout: 30000 }, async () => {
  const sub = uniq("alice");
  const t = token(sub, "--allow-publish", `${sub}.>`);
  const h = await connect(broker.wsUrl, opts({ token: t }));
  assert.equal(h.clientId, sub);
  await h.close();
  const again = await connect(broker.wsUrl, opts({ token: t, clientId: sub }));
  assert.equal(again.clientId, sub);
  await again.close();
});

test("a wrong client id, a bad token or none is refused with a clear error", { timeout: 30000 }, async () => {
  const sub = uniq("alice");
  const good = token(sub);
  await assert.rejects(connect(broker.wsUrl, opts({ token: good, clientId: "mallory" })), (e) => {
    assert.ok(e instanceof HeraldError);
    assert.equal(e.code, "Unauthorized");
    assert.equal(e.number, 5);
    assert.match(e.message, /mallory/);
    return true;
  });
  const forged = mintToken(["--secret-file", otherSecret, "--sub", sub]);
  await assert.rejects(connect(broker.wsUrl, opts({ token: forged })), (e) => e.code === "Unauthorized" && /signature/.test(e.message));
  await assert.rejects(connect(broker.wsUrl, opts({ token: "not a jwt" })), (e) => e.code === "Unauthorized");
  await assert.rejects(connect(broker.wsUrl, opts()), (e) => e.code === "Unauthorized");
});

test("a refused publish rejects with Unauthorized and the connection stays usable", { timeout: 30000 }, async () => {
  const sub = uniq("svc");
  const h = await connect(broker.wsUrl, opts({ token: token(sub, "--allow-publish", `${sub}.>`, "--allow-admin") }));
  await assert.rejects(h.publish("secrets", "x"), (e) => {
    assert.equal(e.code, "Unauthorized");
    assert.match(e.message, /publish/);
    assert.match(e.message, /secrets/);
    return true;
  });
  assert.equal(h.state, "connected");
  const ok = await h.publish(`${sub}.orders`, "y");
  assert.equal(ok.offset, 0);
  assert.equal(h.state, "connected");
  await h.close();
});

test("a token provider refreshes short tokens; the subscription keeps flowing on one connection", { timeout: 40000 }, async () => {
  const sub = uniq("bob");
  const topic = `${sub}.feed`;
  let asked = 0;
  const provider = async () => {
    asked++;
    return token(sub, "--ttl", "4s", "--allow-publish", `${sub}.>`, "--allow-subscribe", `${sub}.>`, "--allow-admin");
  };
  const h = await connect(broker.wsUrl, opts({ token: provider }));
  const events = [];
  for (const type of ["disconnected", "tokenexpiring", "tokenrefreshed", "error"]) h.addEventListener(type, (e) => events.push([type, e.detail]));
  await h.createTopic(topic);
  const s = h.subscribe(topic, { group: "g", start: "earliest" });
  // Publish and receive one by one until two refreshes went through
  // (about 2 s each: the broker warns at half the life of a short token),
  // past the first token's expiry.
  const started = Date.now();
  let n = 0;
  while (events.filter(([type]) => type === "tokenrefreshed").length < 2) {
    await h.publish(topic, `m${n}`);
    const { value } = await s.next();
    assert.equal(value.text(), `m${n}`);
    value.ack();
    n++;
    assert.ok(Date.now() - started < 30000, "two refreshes within 30 s");
  }
  // One more: well past the first token's life (4 s at most).
  await nextEvent(h, "tokenrefreshed", 15000);
  assert.ok(Date.now() - started > 4000, "ran past the first token's expiry");
  await h.publish(topic, "after");
  assert.equal((await s.next()).value.text(), "after");
  assert.deepEqual(events.filter(([type]) => type === "disconnected" || type === "error"), [], "one connection, no error");
  assert.ok(asked >= 4, `asked for ${asked} tokens`);
  await h.close();
});

test("a fixed token that expires ends the connection with TokenExpired", { timeout: 30000 }, async () => {
  const sub = uniq("carol");
  const h = await connect(broker.wsUrl, opts({ token: token(sub, "--ttl", "2s") }));
  const expiring = nextEvent(h, "tokenexpiring", 10000);
  const error = nextEvent(h, "error", 10000);
  const closed = nextEvent(h, "closed", 10000);
  assert.ok((await expiring).detail.expiresInMs <= 2000);
  const e = (await error).detail.error;
  assert.equal(e.code, "TokenExpired");
  assert.equal(e.number, 21);
  // Reconnecting with the same expired token cannot succeed: the client stops.
  await closed;
  assert.equal(h.state, "closed");
});

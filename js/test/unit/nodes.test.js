// Following a cluster's leader, without a broker: which URL the client
// picks after a NotLeader (nodes.js), and the client against fake nodes
// that answer NotLeader the way cluster nodes do (the real cluster is in
// test/integration/cluster.test.js).

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../src/index.js";
import { Nodes, leaderNamed, urlList } from "../../src/nodes.js";
import { FrameDecoder, decodeMessage, encodeFrame } from "../../src/codec.js";
import { parseBatch } from "../../src/batch.js";

test("the leader named by a NotLeader message", () => {
  assert.equal(leaderNamed('node 2 does not lead topic "t"; leader: 127.0.0.1:7503'), "127.0.0.1:7503");
  assert.equal(leaderNamed("node 2 does not lead topic \"leader: x\"; leader: [::1]:7503\n"), "[::1]:7503");
  assert.equal(leaderNamed('topic "t" has no leader yet (an election is under way); retry'), null);
  assert.equal(leaderNamed('node 1 holds no replica of topic "t"; publish to one that does'), null);
  assert.equal(leaderNamed("leader: "), null);
  assert.equal(leaderNamed("leader: a b"), null);
  assert.equal(leaderNamed(undefined), null);
});

test("connect takes one URL or a list of them", () => {
  assert.deepEqual(urlList("ws://a/ws"), ["ws://a/ws"]);
  assert.deepEqual(urlList(["ws://a/ws", "ws://b/ws"]), ["ws://a/ws", "ws://b/ws"]);
  // One URL is one URL, commas and all.
  assert.deepEqual(urlList("ws://a/ws?x=1,2"), ["ws://a/ws?x=1,2"]);
  assert.throws(() => urlList([]), (e) => e.code === "InvalidArgument");
  assert.throws(() => urlList(["ws://a/ws", 7]), (e) => e.code === "InvalidArgument");
});

/** ClusterInfo of node `id` among nodes 1..n at 10.0.0.<id>:7400. */
const info = (id, n = 3, addr = (j) => `10.0.0.${j}:7400`) => ({
  node_id: id,
  nodes: [...Array(n).keys()].map((j) => ({ id: j + 1, addr: addr(j + 1) })),
  groups: [],
});

test("a named leader whose URL is known is gone to directly", () => {
  const n = new Nodes(["ws://1", "ws://2", "ws://3"]);
  n.learn(0, info(1));
  n.learn(2, info(3));
  n.learn(1, info(2));
  assert.deepEqual(n.redirect(0, "10.0.0.3:7400"), { index: 2, known: true });
  assert.deepEqual(n.redirect(2, "10.0.0.2:7400"), { index: 1, known: true });
  assert.deepEqual(n.redirect(1, "10.0.0.1:7400"), { index: 0, known: true });
});

test("a named leader whose URL is not known yet is looked for among the URLs not visited, in turn", () => {
  const n = new Nodes(["ws://1", "ws://2", "ws://3", "ws://4"]);
  n.learn(0, info(1, 4));
  n.learn(1, info(2, 4));
  // Leader 4: neither URL 0 nor 1 (known: nodes 1 and 2); 2 and 3 not visited.
  assert.deepEqual(n.redirect(0, "10.0.0.4:7400"), { index: 2, known: false });
  assert.deepEqual(n.redirect(2, "10.0.0.4:7400"), { index: 3, known: false });
  n.learn(2, info(3, 4));
  // Once URL 2 is known to be node 3, only URL 3 can be node 4.
  assert.deepEqual(n.redirect(1, "10.0.0.4:7400"), { index: 3, known: false });
  n.learn(3, info(4, 4));
  assert.deepEqual(n.redirect(0, "10.0.0.4:7400"), { index: 3, known: true });
});

test("a leader none of the URLs can be is no redirect (the publish fails)", () => {
  const n = new Nodes(["ws://1", "ws://2"]);
  n.learn(0, info(1));
  n.learn(1, info(2));
  assert.equal(n.redirect(0, "10.0.0.3:7400"), null, "node 3's URL was not given");
  assert.equal(n.redirect(1, "10.9.9.9:1"), null, "an address no node knows");
  const one = new Nodes(["ws://only"]);
  assert.equal(one.redirect(0, "10.0.0.3:7400"), null, "one URL: nowhere else to go");
  assert.equal(one.shouldAsk(0), false, "one URL: nothing to learn");
});

test("no leader named (an election): the next URL, whatever is known of it", () => {
  const n = new Nodes(["ws://1", "ws://2", "ws://3"]);
  n.learn(1, info(2));
  assert.deepEqual(n.redirect(0, null), { index: 1, known: false });
  assert.deepEqual(n.redirect(1, null), { index: 2, known: false });
  assert.deepEqual(n.redirect(2, null), { index: 0, known: false });
  assert.deepEqual(new Nodes(["ws://only"]).redirect(0, null), { index: 0, known: false });
});

test("the leader's address is read as the node that named it knows it", () => {
  // Nodes reached through per-pair proxies know each other by different
  // addresses: node 1 knows node 3 as 10.1.0.3, node 2 as 10.2.0.3.
  const n = new Nodes(["ws://1", "ws://2", "ws://3"]);
  n.learn(0, info(1, 3, (j) => (j === 1 ? "10.0.0.1:7400" : `10.1.0.${j}:7400`)));
  n.learn(1, info(2, 3, (j) => (j === 2 ? "10.0.0.2:7400" : `10.2.0.${j}:7400`)));
  n.learn(2, info(3));
  assert.deepEqual(n.redirect(0, "10.1.0.3:7400"), { index: 2, known: true });
  assert.deepEqual(n.redirect(1, "10.2.0.3:7400"), { index: 2, known: true });
  assert.deepEqual(n.redirect(1, "10.2.0.1:7400"), { index: 0, known: true });
});

test("what was learnt of a URL is forgotten when it proves wrong, and asked again", () => {
  const n = new Nodes(["ws://1", "ws://2", "ws://3"]);
  n.learn(0, info(1));
  n.learn(1, info(2));
  assert.equal(n.shouldAsk(0), false);
  assert.equal(n.shouldAsk(2), true);
  // URL 1 is taken for node 2, yet it answers NotLeader naming node 2.
  assert.deepEqual(n.redirect(1, "10.0.0.2:7400"), { index: 2, known: false });
  assert.equal(n.idAt(1), null);
  assert.equal(n.shouldAsk(1), true);
  n.notACluster(2);
  assert.equal(n.shouldAsk(2), false, "a broker not in a cluster is not asked again");
});

// ---- the client against fake cluster nodes ----

const ADDR = (id) => `10.0.0.${id}:7400`;
const URL_OF = (id) => `ws://node${id}/ws`;

/**
 * Fake nodes 1..n at URL_OF(id): they answer Hello, ClusterStatus and
 * Publish; a publish to a node that does not lead is answered NotLeader
 * naming `leader` (an id, or null: an election). `down` nodes refuse
 * connections. Every Publish each node gets is recorded.
 */
function fakeCluster(n = 3) {
  const c = {
    leader: null,
    down: new Set(),
    /** Publishes received, per node id: { seq, producer, bytes }. */
    got: new Map([...Array(n).keys()].map((i) => [i + 1, []])),
    /** Stored (producer, sequence) → offset, as a leader deduplicates. */
    stored: new Map(),
    connects: [],
    sockets: [],
  };
  class Fake {
    constructor(url) {
      this.id = Number(/node(\d+)/.exec(url)[1]);
      c.connects.push(this.id);
      c.sockets.push(this);
      if (c.down.has(this.id)) {
        setTimeout(() => this.onclose?.({ code: 1006, reason: "refused" }), 0);
      } else {
        setTimeout(() => this.onopen?.(), 0);
      }
    }
    send(bytes) {
      const d = new FrameDecoder();
      d.push(bytes);
      const answers = [];
      for (let f = d.next(); f; f = d.next()) {
        const m = decodeMessage(f);
        const a = this.answer(m);
        if (a) answers.push(a);
      }
      for (const a of answers) setTimeout(() => this.onmessage?.({ data: a.slice().buffer }), 0);
    }
    answer(m) {
      const id = m.requestId;
      if (m.op === "Hello") return encodeFrame("HelloOk", id, { version: 1, client_id: "me", max_frame: 1 << 23, max_batch: 1 << 20, heartbeat_ms: 10000 });
      if (m.op === "ClusterStatus") return encodeFrame("ClusterInfo", id, { node_id: this.id, nodes: [...c.got.keys()].map((j) => ({ id: j, addr: ADDR(j) })), groups: [] });
      if (m.op === "Publish") {
        const b = parseBatch(m.body.batch);
        c.got.get(this.id).push({ seq: Number(b.baseSequence), producer: b.producerId, bytes: m.body.batch });
        if (c.leader !== this.id) {
          const message =
            c.leader === null
              ? `topic "${m.body.topic}" has no leader yet (an election is under way); retry`
              : `node ${this.id} does not lead topic "${m.body.topic}"; leader: ${ADDR(c.leader)}`;
          return encodeFrame("Error", id, { code: 22, message });
        }
        const key = `${b.producerId}/${b.baseSequence}`;
        const duplicate = c.stored.has(key);
        if (!duplicate) c.stored.set(key, c.stored.size);
        return encodeFrame("PublishOk", id, { base_offset: c.stored.get(key), count: 1, duplicate });
      }
      return null;
    }
    close() {}
  }
  c.Fake = Fake;
  return c;
}

/** Collects a client's events of one type. */
function record(h, type) {
  const out = [];
  h.addEventListener(type, (e) => out.push(e.detail));
  return out;
}

const opts = (c, o = {}) => ({ WebSocket: c.Fake, reconnectInitialMs: 20, reconnectMaxMs: 200, ...o });

test("publishes answered NotLeader are re-sent, byte for byte and in order, at the leader's URL", { timeout: 10000 }, async () => {
  const c = fakeCluster(3);
  c.leader = 3;
  const h = await connect([URL_OF(1), URL_OF(2), URL_OF(3)], opts(c));
  const hops = record(h, "reconnecting");
  const drops = record(h, "disconnected");
  const receipts = await Promise.all([...Array(5).keys()].map((i) => h.publish("t", `m${i}`)));
  assert.deepEqual(receipts.map((r) => r.offset), [0, 1, 2, 3, 4]);
  assert.equal(h.url, URL_OF(3), "stays with the leader");
  // Node 3's URL was not known: node 2's was tried on the way.
  assert.deepEqual(hops.map((e) => e.url), [URL_OF(2), URL_OF(3)]);
  assert.deepEqual(drops.map((e) => e.code), ["NotLeader", "NotLeader"]);
  assert.equal(hops[0].delayMs, 0, "the first hop to a named leader is made at once");
  assert.ok(hops[1].delayMs > 0, "the next one waits");
  // What node 1 refused is what node 3 stored: same bytes, same producer
  // and sequence, in the order they were published.
  const first = c.got.get(1);
  const stored = c.got.get(3);
  assert.deepEqual(stored.map((p) => p.seq), [0, 1, 2, 3, 4]);
  assert.ok(first.length >= 1);
  for (const p of first) assert.deepEqual(stored[p.seq].bytes, p.bytes);
  assert.equal(new Set(stored.map((p) => p.producer)).size, 1);

  // The leader moves to node 1, whose URL the client knows by now: one hop.
  c.leader = 1;
  hops.length = 0;
  const r = await h.publish("t", "after");
  assert.equal(r.offset, 5);
  assert.deepEqual(hops.map((e) => [e.url, e.delayMs]), [[URL_OF(1), 0]]);
  assert.equal(h.url, URL_OF(1));
  await h.close({ timeoutMs: 0 });
});

test("during an election the client waits, longer each time and with jitter, and tries the other nodes in turn", { timeout: 10000 }, async () => {
  const c = fakeCluster(3);
  c.leader = null;
  const h = await connect([URL_OF(1), URL_OF(2), URL_OF(3)], opts(c, { reconnectInitialMs: 10, reconnectMaxMs: 80 }));
  const hops = [];
  let elected;
  const sixHops = new Promise((resolve) => {
    h.addEventListener("reconnecting", (e) => {
      hops.push(e.detail);
      // Elected once the client went round twice.
      if (hops.length === 6) {
        c.leader = 2;
        elected = Date.now();
        resolve();
      }
    });
  });
  const started = Date.now();
  const receipt = h.publish("t", "x");
  await sixHops;
  assert.deepEqual((await receipt).offset, 0);
  assert.deepEqual(hops.slice(0, 6).map((e) => e.url), [2, 3, 1, 2, 3, 1].map(URL_OF));
  // 10 ms doubling up to 80, each between half and all of it.
  const bases = [10, 20, 40, 80, 80, 80];
  hops.slice(0, 6).forEach((e, i) => assert.ok(e.delayMs >= bases[i] / 2 && e.delayMs <= bases[i], `hop ${i + 1}: ${e.delayMs} ms`));
  const waited = hops.slice(0, 5).reduce((s, e) => s + e.delayMs, 0);
  assert.ok(elected - started >= waited - 5, "the client did wait between hops (it did not spin)");
  assert.ok(c.connects.length <= 8, `${c.connects.length} connections`);
  await h.close({ timeoutMs: 0 });
});

test("with one URL a NotLeader fails the publish: the leader cannot be reached, the connection stays", { timeout: 10000 }, async () => {
  const c = fakeCluster(3);
  c.leader = 3;
  const h = await connect(URL_OF(1), opts(c));
  const drops = record(h, "disconnected");
  await assert.rejects(h.publish("t", "x"), (e) => e.code === "NotLeader" && e.number === 22 && /leader: 10\.0\.0\.3:7400/.test(e.message));
  assert.ok(h.connected);
  assert.equal(drops.length, 0);
  assert.deepEqual(c.got.get(1).length, 1);
  await h.close({ timeoutMs: 0 });
});

test("given only followers' URLs, a publish fails once every URL is known not to be the leader's", { timeout: 10000 }, async () => {
  const c = fakeCluster(3);
  c.leader = 3;
  const h = await connect([URL_OF(1), URL_OF(2)], opts(c));
  await assert.rejects(h.publish("t", "x"), (e) => e.code === "NotLeader" && /none of the URLs/.test(e.message));
  // Tried once each: node 1, then node 2 (not known yet), then given up.
  assert.deepEqual(c.connects, [1, 2]);
  // The next publish (a new producer, the refused sequence never stored)
  // is refused at once: both URLs are known.
  await assert.rejects(h.publish("t", "y"), (e) => e.code === "NotLeader");
  assert.deepEqual(c.connects, [1, 2]);
  await h.close({ timeoutMs: 0 });
});

test("a node that is down is skipped, at connect and when reconnecting", { timeout: 10000 }, async () => {
  const c = fakeCluster(3);
  c.down.add(1);
  c.leader = 3;
  const h = await connect([URL_OF(1), URL_OF(2), URL_OF(3)], opts(c));
  assert.equal(h.url, URL_OF(2));
  assert.equal((await h.publish("t", "a")).offset, 0);
  assert.equal(h.url, URL_OF(3));
  // Node 3 dies (its connection ends, it refuses new ones) and node 2 is
  // elected: the client tries node 3 again, then goes round the list.
  const reconnected = new Promise((resolve) => h.addEventListener("reconnected", resolve, { once: true }));
  c.down.add(3);
  c.leader = 2;
  c.sockets.at(-1).onclose({ code: 1006, reason: "" });
  const p = h.publish("t", "b");
  await reconnected;
  assert.equal((await p).offset, 1);
  assert.equal(h.url, URL_OF(2));
  assert.deepEqual(c.connects, [1, 2, 3, 3, 1, 2]);
  await h.close({ timeoutMs: 0 });
});

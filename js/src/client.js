// The connection: one WebSocket to the broker's /ws, the handshake, and
// everything that must survive a reconnect. What the client remembers
// across connections (as docs/client.md describes for the Rust client):
// publishes not yet confirmed (re-sent byte for byte, so the broker's
// idempotent-producer check stores each once), requests not yet answered
// (re-sent), subscriptions (subscribed again: groups resume at their
// committed position, ephemeral ones after the last message handed out),
// acks not yet confirmed durable (re-sent), and rooms (joined again).
// A token provider is asked for a token at every handshake and whenever
// the broker says the connection's token is expiring (then sent in a
// Refresh, which keeps the connection and its subscriptions).
// Given a cluster's URLs, the connection follows the leader of the topics
// it publishes to: a publish answered NotLeader is kept, the connection
// moves to the leader's URL (nodes.js says which), and the publish is sent
// again there as it was.

import { encodeFrame, withRequestId, decodeMessage, FrameDecoder, PROTOCOL_VERSION } from "./codec.js";
import { buildBatch, toBytes } from "./batch.js";
import { HeraldError, connectionLost, invalidArgument, protocolError } from "./errors.js";
import { Subscription } from "./subscription.js";
import { Rooms } from "./rooms.js";
import { Nodes, leaderNamed, urlList } from "./nodes.js";

export const CLIENT_NAME = "herald-js/0.1.0";

/** Handshake errors that a retry cannot fix: the client stops. (An
 * expired token is one too, unless a token provider can give a new one.) */
const FATAL = new Set(["Unauthorized", "UnsupportedVersion", "InvalidArgument", "HandshakeRequired", "BadFrame"]);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `f` once the code and the promise reactions running now are done:
 * Node's setImmediate (after them, before timers of the next turn); a
 * microtask elsewhere (after the code running now). */
const soon = typeof setImmediate === "function" ? setImmediate : queueMicrotask;

/** A random, non-zero 64-bit producer id. */
function producerId() {
  const a = new BigUint64Array(1);
  do crypto.getRandomValues(a);
  while (a[0] === 0n);
  return a[0];
}

/** snake_case keys (the wire's) to camelCase (JavaScript's), deeply. */
export function camel(v) {
  if (Array.isArray(v)) return v.map(camel);
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), camel(x)]));
}

/**
 * Connects and resolves once the broker accepted the handshake. Given the
 * URLs of a cluster's nodes, it tries each in turn until one accepts.
 * @param {string|string[]} urls e.g. "ws://127.0.0.1:7480/ws", or one URL per cluster node
 * @param {object} [options] see index.d.ts
 * @returns {Promise<Herald>}
 */
export async function connect(urls, options = {}) {
  const h = new Herald(urls, options);
  await h._openFirst();
  h.state = "connected";
  h._emit("connected");
  return h;
}

export class Herald extends EventTarget {
  constructor(urls, o = {}) {
    super();
    /** The URLs given, and what the client learnt of the nodes there (nodes.js). */
    this._nodes = new Nodes(urlList(urls));
    this._WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WS !== "function") {
      throw invalidArgument("no WebSocket class here: on Node before 22, pass { WebSocket } from the ws package");
    }
    /** The client id: given, or assigned by the broker at the first handshake. */
    this.clientId = o.clientId ?? null;
    /** A string, or a function returning one (or a promise of one). */
    this._token = o.token ?? null;
    this._clientName = o.clientName ?? CLIENT_NAME;
    this._backoff = [o.reconnectInitialMs ?? 100, o.reconnectMaxMs ?? 5000];
    this._maxAttempts = o.maxReconnectAttempts ?? Infinity;
    this._maxPending = o.maxPendingPublishes ?? 10000;
    this._connectTimeoutMs = o.connectTimeoutMs ?? 10000;
    /** "connecting" | "connected" | "reconnecting" | "closed" */
    this.state = "connecting";
    this._conn = null;
    this._nextId = 1;
    /** Requests awaiting their reply, by request id, in send order. */
    this._pending = new Map();
    /** Publishes awaiting their confirm, by request id, in send order. */
    this._publishes = new Map();
    this._producer = { id: producerId(), next: 0 };
    this._space = [];
    this._subs = new Set();
    this._byBrokerId = new Map();
    this._closed = false;
    /** close() is waiting for acks: each ack frame asks for a confirm. */
    this._closing = false;
    /** NotLeader answers followed since the last confirmed publish. */
    this._hops = 0;
    /** Where the next reconnect goes after a NotLeader: { index, delayMs }. */
    this._redirect = null;
    this._heartbeatMs = 10000;
    this._timer = null;
    this.rooms = new Rooms(this);
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(Object.assign(new Event(type), { detail }));
  }

  _id() {
    return this._nextId++;
  }

  get connected() {
    return this._conn?.live === true;
  }

  /** The URL in use (or tried next). */
  get url() {
    return this._nodes.url;
  }

  /** The URLs the client was given. */
  get urls() {
    return [...this._nodes.urls];
  }

  // ---- the connection ----

  /** The token for a Hello or a Refresh: the fixed one, or the provider's. */
  async _currentToken() {
    const t = this._token;
    if (typeof t !== "function") return t;
    let v;
    try {
      v = await t();
    } catch (e) {
      throw new HeraldError("Token", `the token provider failed: ${e?.message ?? e}`);
    }
    if (typeof v !== "string" || v === "") throw new HeraldError("Token", "the token provider gave no token (it must give a non-empty string)");
    return v;
  }

  /** Whether a handshake refusal ends the client (no retry can help). */
  _fatal(e) {
    return FATAL.has(e.code) || (e.code === "TokenExpired" && typeof this._token !== "function");
  }

  /** The first connection: each URL in turn until one takes it (a refusal
   * no retry can fix ends it at once). */
  async _openFirst() {
    const n = this._nodes.urls.length;
    for (let i = 0; ; i++) {
      try {
        return await this._open(i);
      } catch (e) {
        if (i + 1 >= n || this._fatal(e) || this._closed) throw e;
      }
    }
  }

  /** Opens one connection to URL `index`; resolves at HelloOk, rejects if
   * it fails first. */
  async _open(index) {
    const token = await this._currentToken();
    if (this._closed) throw connectionLost("the client is closed");
    this._nodes.current = index;
    const url = this._nodes.urls[index];
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this._WS(url);
      } catch (e) {
        reject(new HeraldError("Connect", String(e?.message ?? e)));
        return;
      }
      // Node's `ws` hands a received message over as it read it (a
      // view of the socket's bytes); asked for an ArrayBuffer it copies each
      // message into a new one, a tenth of the receive path's time in the
      // rooms benchmark. Other WebSockets (browsers, undici) refuse the
      // name and get "arraybuffer".
      ws.binaryType = "nodebuffer";
      if (ws.binaryType !== "nodebuffer") ws.binaryType = "arraybuffer";
      const conn = { ws, index, decoder: new FrameDecoder(), live: false, resolve, reject, lastRx: Date.now(), lastTx: 0, out: [], outBytes: 0, over: false };
      this._conn = conn;
      conn.timer = setTimeout(() => this._fail(conn, new HeraldError("Connect", "no handshake within the connect timeout")), this._connectTimeoutMs);
      ws.onopen = () => {
        if (this._conn !== conn) return;
        conn.helloId = this._id();
        const hello = {
          min_version: PROTOCOL_VERSION,
          max_version: PROTOCOL_VERSION,
          client_name: this._clientName,
          client_id: this.clientId,
          token,
        };
        this._write(conn, encodeFrame("Hello", conn.helloId, hello));
      };
      ws.onmessage = (ev) => this._onData(conn, ev.data);
      ws.onclose = (ev) => {
        const reason = ev.reason || conn.error;
        const why = `connection closed (code ${ev.code}${reason ? `: ${reason}` : ""})`;
        this._fail(conn, connectionLost(why));
      };
      // A close event follows. Node's `ws` says why (a certificate it does
      // not trust, an HTTP error); browsers never do.
      ws.onerror = (ev) => {
        if (typeof ev?.message === "string" && ev.message !== "") conn.error = ev.message;
      };
    });
  }

  /** Queues a frame; the frames written in one go (a burst of emits, the
   * acks of several subscriptions) leave together in one WebSocket message
   * once the code running now is done (message boundaries mean nothing to
   * the broker). */
  _write(conn, frame) {
    conn.out.push(frame);
    conn.outBytes += frame.length;
    if (conn.out.length === 1) soon(() => this._flush(conn));
  }

  /** Sends the queued frames, one message. */
  _flush(conn) {
    const out = conn.out;
    if (out.length === 0 || conn.over) return;
    let message = out[0];
    if (out.length > 1) {
      message = new Uint8Array(conn.outBytes);
      let p = 0;
      for (const f of out) {
        message.set(f, p);
        p += f.length;
      }
    }
    conn.out = [];
    conn.outBytes = 0;
    try {
      conn.ws.send(message);
    } catch (e) {
      this._fail(conn, connectionLost(`sending failed: ${e?.message ?? e}`));
      return;
    }
    conn.lastTx = Date.now();
  }

  /** Sends a frame if a handshaken connection is up (else it waits in state). */
  _send(frame) {
    const c = this._conn;
    if (c?.live) this._write(c, frame);
  }

  _onData(conn, data) {
    if (this._conn !== conn) return;
    conn.lastRx = Date.now();
    try {
      // A plain view either way: a Node Buffer's `slice` does not copy.
      conn.decoder.push(ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data));
      for (let f = conn.decoder.next(); f; f = conn.decoder.next()) {
        this._onMessage(conn, decodeMessage(f));
        if (this._conn !== conn) return;
      }
    } catch (e) {
      this._fail(conn, e.name === "HeraldError" ? e : protocolError(String(e)));
    }
  }

  /** The connection is over: reconnect, unless closed or refused for good. */
  _fail(conn, err) {
    if (this._conn !== conn) return;
    this._conn = null;
    // What was not sent is in the client's state (requests, acks): sent
    // again on the next connection.
    conn.over = true;
    conn.out = [];
    clearTimeout(conn.timer);
    clearInterval(this._timer);
    try {
      conn.ws.close();
    } catch {
      // already closing
    }
    if (!conn.live) {
      // Closed before its handshake: a connection that was never made
      // (no broker there, a wrong path or port), said with its address,
      // which browsers give no other word of.
      const url = this._nodes.urls[conn.index];
      conn.reject(err.code === "ConnectionLost" ? new HeraldError("Connect", `cannot connect to ${url}: ${err.detail}`) : err);
      return;
    }
    this._onDisconnected();
    this._emit("disconnected", { reason: err.detail ?? String(err), code: err.code });
    const redirect = this._redirect;
    this._redirect = null;
    if (!this._closed) this._reconnect(conn.index, redirect);
  }

  /** A delay for the `n`th try (1, 2, ...): exponential backoff with
   * jitter, so that a broker restart or an election is not met by every
   * client at the same instant. */
  _backoffMs(n) {
    const [initial, max] = this._backoff;
    const base = Math.min(max, initial * 2 ** Math.min(n - 1, 20));
    return Math.round(base * (0.5 + Math.random() / 2));
  }

  /**
   * Reconnects after the connection to URL `from` ended: to the URL a
   * NotLeader pointed at (`redirect`), else to the same URL first (a drop
   * may be brief), then to the next URL after each failed attempt.
   */
  async _reconnect(from, redirect = null) {
    let index = redirect ? redirect.index : from;
    for (let attempt = 1; !this._closed; attempt++) {
      if (attempt > this._maxAttempts) {
        this._shutDown(connectionLost(`gave up after ${attempt - 1} reconnect attempts`));
        return;
      }
      if (attempt > 1) index = this._nodes.next(index);
      const delayMs = attempt === 1 && redirect ? redirect.delayMs : this._backoffMs(attempt);
      this.state = "reconnecting";
      this._emit("reconnecting", { attempt, delayMs, url: this._nodes.urls[index] });
      if (delayMs > 0) await sleep(delayMs);
      if (this._closed) return;
      try {
        await this._open(index);
        this.state = "connected";
        this._emit("reconnected", { attempt });
        return;
      } catch (e) {
        if (this._fatal(e)) {
          this._emit("error", { error: e, context: "reconnecting" });
          this._shutDown(e);
          return;
        }
      }
    }
  }

  _onHelloOk(conn, ok) {
    clearTimeout(conn.timer);
    this.clientId = ok.client_id;
    this._heartbeatMs = ok.heartbeat_ms || 10000;
    this.maxBatch = ok.max_batch;
    conn.live = true;
    this._timer = setInterval(() => this._heartbeat(conn), Math.max(50, this._heartbeatMs / 2));
    this._restore();
    conn.resolve();
  }

  /** Pings a quiet broker; gives up on a silent one (3 heartbeats). */
  _heartbeat(conn) {
    if (this._conn !== conn) return;
    const now = Date.now();
    if (now - conn.lastRx > 3 * this._heartbeatMs) {
      this._fail(conn, connectionLost("the broker stayed silent for 3 heartbeats"));
    } else if (now - Math.max(conn.lastTx, conn.lastRx) >= this._heartbeatMs) {
      this._write(conn, encodeFrame("Ping", 0));
    }
  }

  /** Replays what the last connection left: rooms, subscriptions, then
   * publishes and requests in the order they were first sent. */
  _restore() {
    // What waited for this connection (taken before the joins and
    // subscribes below add theirs).
    const reqs = [...this._pending.values()];
    this._pending.clear();
    const pubs = [...this._publishes.values()];
    this._publishes.clear();
    this._askWhoIsThere();
    this.rooms._rejoin();
    for (const s of this._subs) s._resubscribe();
    for (const p of pubs) this._sendPublish(p);
    for (const r of reqs) {
      const id = this._id();
      this._pending.set(id, r);
      this._send(withRequestId(r.frame, id));
    }
  }

  /** With several URLs, asks the node just reached who it is (once per
   * URL), so that a NotLeader naming it leads here (nodes.js). */
  _askWhoIsThere() {
    const i = this._conn.index;
    if (!this._nodes.shouldAsk(i)) return;
    const noop = () => {};
    this._requestSync("ClusterStatus", null, {
      // Read while the frame is: a NotLeader right behind it finds it.
      sync: (m, err) => {
        if (!err && m.op === "ClusterInfo") this._nodes.learn(i, m.body);
        else this._nodes.notACluster(i);
      },
      onLost: noop,
      reject: noop,
    });
  }

  _onDisconnected() {
    this._byBrokerId.clear();
    for (const s of this._subs) s._onDisconnected();
    this.rooms._onDisconnected();
    for (const [id, r] of this._pending) {
      if (r.onLost) {
        this._pending.delete(id);
        r.onLost();
      }
    }
  }

  _onMessage(conn, m) {
    if (!conn.live) {
      const refusal = m.op === "Error" && m.requestId === 0;
      if (m.requestId !== conn.helloId && !refusal) throw protocolError(`${m.op} before HelloOk`);
      if (m.op === "HelloOk") return this._onHelloOk(conn, m.body);
      const e = m.op === "Error" ? HeraldError.fromBroker(m.body) : protocolError(`${m.op} answered Hello`);
      return this._fail(conn, e);
    }
    switch (m.op) {
      case "Deliver":
        return this._byBrokerId.get(m.body.subscription_id)?._deliver(m.body);
      case "SubscriptionError":
        return this._byBrokerId.get(m.body.subscription_id)?._end(HeraldError.fromBroker(m.body));
      case "Skipped":
        return this._byBrokerId.get(m.body.subscription_id)?._skipped(m.body);
      case "TokenExpiring":
        return this._refreshToken(conn, m.body.expires_in_ms);
      case "Ping":
        return this._send(encodeFrame("Pong", m.requestId));
      case "Pong":
      case "GoingAway":
        return; // the close that follows GoingAway starts the reconnect
      case "Error":
        if (m.requestId === 0) {
          // About the connection (an expired token, ...): it closes.
          const e = HeraldError.fromBroker(m.body);
          this._emit("error", { error: e, context: "connection" });
          return this._fail(conn, e);
        }
        break;
      default:
    }
    const p = this._publishes.get(m.requestId);
    if (p) return this._onPublishReply(conn, m.requestId, p, m);
    const r = this._pending.get(m.requestId);
    if (!r) return;
    this._pending.delete(m.requestId);
    const err = m.op === "Error" ? HeraldError.fromBroker(m.body) : null;
    // Synchronous: a Deliver in the same chunk must find the subscription.
    if (r.sync) r.sync(m, err);
    else if (err) r.reject(err);
    else r.resolve(m);
  }

  /**
   * The broker's TokenExpiring push: ask the provider for a new token and
   * send it in a Refresh. With a fixed token there is nothing to send: the
   * connection ends at expiry (and reconnecting fails with TokenExpired).
   */
  async _refreshToken(conn, expiresInMs) {
    this._emit("tokenexpiring", { expiresInMs });
    if (typeof this._token !== "function") return;
    try {
      const token = await this._currentToken();
      // A new connection's Hello carried a fresh token already.
      if (this._conn !== conn || !conn.live) return;
      const m = await this._request("Refresh", { token }, { onLost: (resolve) => resolve(null) });
      if (m === null) return;
      if (m.op !== "Ok") throw protocolError(`${m.op} answered Refresh`);
      this._emit("tokenrefreshed", {});
    } catch (e) {
      this._emit("error", { error: e, context: "refreshing the token" });
    }
  }

  // ---- requests ----

  /**
   * Sends a request and resolves with the reply message ({ op, body }).
   * It is re-sent after a reconnect until answered, unless `onLost` says
   * what to do instead.
   */
  _request(op, body, { onLost } = {}) {
    if (this._closed) return Promise.reject(connectionLost("the client is closed"));
    return new Promise((resolve, reject) => {
      this._requestSync(op, body, { resolve, reject, onLost: onLost && (() => onLost(resolve, reject)) });
    });
  }

  /** Like _request, with the reply handed to `entry.sync(message, error)`
   * while the frame is being read, if given. */
  _requestSync(op, body, entry) {
    const id = this._id();
    const frame = encodeFrame(op, id, body);
    this._pending.set(id, { frame, ...entry });
    this._send(frame);
  }

  async _expect(op, body, want) {
    const m = await this._request(op, body);
    if (m.op !== want) throw protocolError(`${m.op} answered ${op}`);
    return m.body;
  }

  // ---- publishing ----

  /**
   * Publishes one record; resolves with { offset, duplicate } once the
   * broker confirmed it durable (offset null: a duplicate re-sent after a
   * reconnect, older than the 64 batches the broker remembers per producer).
   * @param {string} topic
   * @param {string|Uint8Array|ArrayBuffer} data
   * @param {{ key?: string|Uint8Array, headers?: object, timestamp?: number }} [o]
   */
  async publish(topic, data, o = {}) {
    while (this._publishes.size >= this._maxPending && !this._closed) {
      await new Promise((r) => this._space.push(r));
    }
    if (this._closed) throw connectionLost("the client is closed");
    const record = { payload: toBytes(data), key: o.key, headers: o.headers, timestamp: o.timestamp ?? Date.now() };
    return new Promise((resolve, reject) => {
      const p = { topic, record, resolve, reject };
      this._seal(p);
      this._sendPublish(p);
    });
  }

  /** Gives the batch the producer's next sequence number. */
  _seal(p) {
    const batch = buildBatch([p.record], this._producer.id, this._producer.next);
    if (this.maxBatch && batch.length > this.maxBatch) {
      throw new HeraldError("TooLarge", `a record of ${batch.length} bytes exceeds the broker's ${this.maxBatch}`);
    }
    p.producer = this._producer.id;
    p.batch = batch;
    this._producer.next++;
  }

  _sendPublish(p) {
    const id = this._id();
    this._publishes.set(id, p);
    this._send(encodeFrame("Publish", id, { topic: p.topic, batch: p.batch }));
  }

  _onPublishReply(conn, id, p, m) {
    if (m.op === "Error" && m.body.code === 22 && this._followLeader(conn, m.body)) {
      // Kept in its place among the unconfirmed publishes: re-sent as is
      // (same producer sequence) on the next connection, in order.
      return;
    }
    this._publishes.delete(id);
    if (m.op === "PublishOk") {
      this._hops = 0;
      p.resolve({ offset: m.body.base_offset, duplicate: m.body.duplicate });
    } else if (m.op === "Error" && m.body.code === 22) {
      // No URL of this client is the leader's: nothing to follow.
      p.reject(new HeraldError("NotLeader", `${m.body.message} (none of the URLs this client was given is the leader's)`, 22));
      this._producer = { id: producerId(), next: 0 };
    } else if (m.op === "Error" && m.body.code === 12 && p.producer !== this._producer.id) {
      // Sealed under a producer retired after a refusal (below): the
      // broker saw a gap. Seal it again under the current one.
      try {
        this._seal(p);
        this._sendPublish(p);
        return;
      } catch (e) {
        p.reject(e);
      }
    } else {
      p.reject(m.op === "Error" ? HeraldError.fromBroker(m.body) : protocolError(`${m.op} answered Publish`));
      // The refused sequence number was never stored: later batches of
      // this producer would be a gap. Go on under a new producer.
      this._producer = { id: producerId(), next: 0 };
    }
    this._space.shift()?.();
  }

  /**
   * A cluster node does not lead the topic of a publish (NotLeader, which
   * stored nothing): drops the connection and reconnects to the leader's
   * URL, or to another node's while an election is under way, where the
   * unconfirmed publishes are sent again. False when no URL of this client
   * can be the leader's.
   */
  _followLeader(conn, body) {
    const leader = leaderNamed(body.message);
    const to = this._nodes.redirect(conn.index, leader);
    if (!to) return false;
    this._hops++;
    // The first hop to a named leader is made at once; the hops after it
    // (the leader moved again, or was not where it was looked for) and
    // every hop during an election wait, longer each time, with jitter.
    const delayMs = leader !== null && this._hops === 1 ? 0 : this._backoffMs(this._hops);
    this._redirect = { index: to.index, delayMs };
    this._fail(conn, HeraldError.fromBroker(body));
    return true;
  }

  // ---- subscriptions ----

  /**
   * Subscribes to a topic. The subscription is an async iterable of
   * messages; `for await (const m of herald.subscribe(...))`.
   * @param {string} topic
   * @param {object} [o] { group, start, prefetch, prefetchBytes, ackTimeoutMs, maxDeliveries }
   */
  subscribe(topic, o = {}) {
    const s = new Subscription(this, topic, o);
    this._subs.add(s);
    s._resubscribe();
    return s;
  }

  // ---- topics ----

  async createTopic(name, o = {}) {
    const config = {
      retention_bytes: o.retentionBytes ?? null,
      retention_ms: o.retentionMs ?? null,
      segment_bytes: o.segmentBytes ?? null,
      fsync: fsyncPolicy(o.fsync),
    };
    const replicas = o.replicas ?? 0;
    return camel(await this._expect("CreateTopic", { name, config, replicas }, "TopicInfo"));
  }

  async deleteTopic(name) {
    await this._expect("DeleteTopic", { name }, "Ok");
  }

  async listTopics() {
    return camel((await this._expect("ListTopics", null, "TopicList")).topics);
  }

  async describeTopic(name) {
    return camel(await this._expect("DescribeTopic", { name }, "TopicInfo"));
  }

  async listGroups(topic) {
    return camel((await this._expect("ListGroups", { name: topic }, "GroupList")).groups);
  }

  async resetGroup(topic, group, to) {
    await this._expect("ResetGroup", { topic, group, to: startPosition(to) }, "Ok");
  }

  async repairTopic(name, { dryRun = false } = {}) {
    return camel(await this._expect("RepairTopic", { name, dry_run: dryRun }, "RepairReport"));
  }

  /** The cluster as the node this client is connected to sees it (docs/cluster.md):
   * { nodeId, nodes: [{ id, addr }], groups: [{ name, leader, term, lastIndex, applied, replicas }] }.
   * A broker not in a cluster answers InvalidArgument. */
  async clusterStatus() {
    return camel(await this._expect("ClusterStatus", null, "ClusterInfo"));
  }

  // ---- rooms (see rooms.js) ----

  join(room, o) {
    return this.rooms.join(room, false, o);
  }
  joinDurable(room, o) {
    return this.rooms.join(room, true, o);
  }
  leave(room) {
    return this.rooms.leave(room);
  }
  members(room) {
    return this.rooms.members(room);
  }
  myRooms() {
    return this.rooms.myRooms();
  }
  emit(target, event, data) {
    return this.rooms.emit(target, event, data);
  }
  broadcast(room, event, data) {
    return this.rooms.emit({ room, exceptSender: true }, event, data);
  }
  emitToClient(clientId, event, data) {
    return this.rooms.emit({ client: clientId }, event, data);
  }
  emitToRooms(rooms, event, data) {
    return this.rooms.emit({ rooms }, event, data);
  }
  emitAll(event, data) {
    return this.rooms.emit({ all: true }, event, data);
  }
  request(clientId, event, data, o) {
    return this.rooms.request(clientId, event, data, o);
  }
  on(event, handler) {
    return this.rooms.on(event, handler);
  }
  off(event, handler) {
    this.rooms.off(event, handler);
  }
  onPresence(handler) {
    return this.rooms.onPresence(handler);
  }

  // ---- closing ----

  /**
   * Waits (up to `timeoutMs`) for unconfirmed publishes and acks, then
   * closes. Whatever is still unconfirmed fails with ConnectionLost.
   */
  async close({ timeoutMs = 5000 } = {}) {
    if (this._closed) return;
    const deadline = Date.now() + timeoutMs;
    // Acks made from now on (and re-sent after a reconnect) ask for a
    // confirm too, so that the wait below ends.
    this._closing = true;
    for (const s of this._subs) s._flushAcks(true);
    while (this.connected && Date.now() < deadline && (this._publishes.size > 0 || [...this._subs].some((s) => s._acksPending()))) {
      await sleep(5);
    }
    this._shutDown(connectionLost("the client was closed"));
  }

  _shutDown(err) {
    if (this._closed) return;
    this._closed = true;
    this.state = "closed";
    const c = this._conn;
    this._conn = null;
    clearInterval(this._timer);
    if (c) {
      clearTimeout(c.timer);
      try {
        this._flush(c);
        c.over = true;
        c.ws.close(1000);
      } catch {
        // already closed
      }
      if (!c.live) c.reject(err);
    }
    for (const p of this._publishes.values()) p.reject(err);
    this._publishes.clear();
    // A Subscribe waits with no reject (its subscription ends below).
    for (const r of this._pending.values()) r.reject?.(err);
    this._pending.clear();
    for (const w of this._space.splice(0)) w();
    for (const s of this._subs) s._end(null);
    this.rooms._close(err);
    this._emit("closed", { reason: err.detail });
  }
}

/** "resume" | "earliest" | "latest" | { offset } | { timestamp } → wire. */
export function startPosition(s = "resume") {
  if (s === "resume") return "Resume";
  if (s === "earliest") return "Earliest";
  if (s === "latest") return "Latest";
  if (s && typeof s.offset === "number") return { Offset: s.offset };
  if (s && typeof s.timestamp === "number") return { Timestamp: s.timestamp };
  throw invalidArgument(`start ${JSON.stringify(s)}: resume, earliest, latest, { offset } or { timestamp }`);
}

function fsyncPolicy(f) {
  if (f === undefined || f === null) return null;
  if (f === "always") return "Always";
  if (f === "never") return "Never";
  if (typeof f?.intervalMs === "number") return { Interval: { ms: f.intervalMs } };
  throw invalidArgument(`fsync ${JSON.stringify(f)}: "always", "never" or { intervalMs }`);
}

// Rooms and events (docs/rooms.md) on today's wire protocol: Join, Leave,
// Emit, Members and Reply requests, and an inbox — the group subscription
// (group "inbox") of the topic `_inbox.<client id>` — through which every
// event, presence change and reply reaches this client. Kept apart from the
// connection code so that a change of how room events travel touches only
// this module.
//
// Handlers run one at a time, in inbox order; an event is acked once its
// handlers have returned (or their promises resolved). An event nobody
// handles yet is kept, unacked, until a handler for its name is added.

import { HeraldError, invalidArgument, protocolError } from "./errors.js";
import { toBytes } from "./batch.js";

const text = new TextDecoder();

/** Header names of inbox records (herald_protocol::rooms::headers). */
export const H = Object.freeze({
  kind: "herald-kind",
  sender: "herald-sender",
  room: "herald-room",
  replyTo: "herald-reply-to",
  correlation: "herald-correlation",
});

const INBOX_GROUP = "inbox";
const INBOX_PREFETCH = 256;

/** One event from the inbox. */
export class RoomEvent {
  constructor(rooms, m) {
    this._rooms = rooms;
    this._message = m;
    this.name = m.key ? text.decode(m.key) : "";
    /** "event", "presence" or "reply" */
    this.kind = m.header(H.kind) ?? "event";
    this.sender = m.header(H.sender) ?? "";
    this.room = m.header(H.room) ?? null;
    this.payload = m.payload;
    /** Position in this client's inbox: increases with every event. */
    this.offset = m.offset;
    this.timestamp = m.timestamp;
    this.deliveryCount = m.deliveryCount;
    const c = m.header(H.correlation);
    this.correlation = c === undefined ? 0 : Number(c);
    this.replyTo = m.header(H.replyTo) ?? null;
  }

  text() {
    return text.decode(this.payload);
  }

  json() {
    return JSON.parse(this.text());
  }

  /** Whether the sender waits for a reply (it used `request`). */
  get expectsReply() {
    return this.replyTo !== null && this.correlation !== 0;
  }

  /** Answers a request; resolves once durable in the requester's inbox. */
  async reply(data) {
    if (!this.expectsReply) throw invalidArgument(`event ${this.name} expects no reply`);
    const body = { to_client: this.replyTo, correlation: this.correlation, payload: toBytes(data) };
    const m = await this._rooms.client._request("Reply", body);
    if (m.op !== "Ok") throw protocolError(`${m.op} answered Reply`);
  }
}

/** The wire form of an emit target. */
function target(t) {
  if (typeof t === "string") return { Room: t };
  if (t?.all) return "All";
  if (typeof t?.client === "string") return { Client: t.client };
  if (Array.isArray(t?.rooms)) return { Rooms: { rooms: t.rooms, except_sender: !!t.exceptSender } };
  if (typeof t?.room === "string") return t.exceptSender ? { RoomExceptSender: t.room } : { Room: t.room };
  throw invalidArgument(`emit target ${JSON.stringify(t)}: { room }, { room, exceptSender }, { rooms }, { client } or { all }`);
}

export class Rooms {
  constructor(client) {
    this.client = client;
    /** Rooms joined and not left, with their durability: joined again
     * after every reconnect, in case the broker's grace period ran out. */
    this.joined = new Map();
    this.handlers = new Map();
    this.presence = new Set();
    /** Requests waiting for their reply, by correlation id. */
    this.waiters = new Map();
    /** Events with no handler yet, in inbox order. */
    this.parked = [];
    this.inbox = null;
    // A random start: a reply left in the inbox by an earlier run of this
    // client cannot match a new request.
    this.nextCorrelation = 1 + Math.floor(Math.random() * 2 ** 40);
    this.tail = Promise.resolve();
  }

  async join(room, durable) {
    this.joined.set(room, durable);
    const m = await this.client._request("Join", { room, durable });
    if (m.op !== "Ok") throw protocolError(`${m.op} answered Join`);
  }

  async leave(room) {
    this.joined.delete(room);
    const m = await this.client._request("Leave", { room });
    if (m.op !== "Ok") throw protocolError(`${m.op} answered Leave`);
  }

  _rejoin() {
    for (const [room, durable] of this.joined) {
      this.client._request("Join", { room, durable }, { onLost: () => {} }).catch((e) => {
        this.client._emit("error", { error: e, context: `rejoining ${room}` });
      });
    }
  }

  async members(room) {
    const m = await this.client._request("Members", { room });
    if (m.op !== "MemberList") throw protocolError(`${m.op} answered Members`);
    return m.body.members.map((x) => ({ clientId: x.client_id, online: x.online }));
  }

  /** Emits; resolves with { recipients, skipped } once durable in every
   * recipient's inbox. */
  async emit(to, event, data, correlation = 0) {
    if (!event) throw invalidArgument("empty event name");
    const body = { target: target(to), event, payload: toBytes(data), correlation };
    const m = await this.client._request("Emit", body);
    if (m.op !== "EmitOk") throw protocolError(`${m.op} answered Emit`);
    return { recipients: m.body.recipients, skipped: m.body.skipped };
  }

  /** Sends `event` to one client and resolves with its reply event. */
  async request(clientId, event, data, { timeoutMs = 30000 } = {}) {
    this._startInbox();
    const c = this.nextCorrelation++;
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(c);
        reject(new HeraldError("Timeout", `no reply to ${event} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(c, { resolve, reject, timer });
    });
    try {
      await this.emit({ client: clientId }, event, data, c);
    } catch (e) {
      const w = this.waiters.get(c);
      if (w) clearTimeout(w.timer);
      this.waiters.delete(c);
      answer.catch(() => {});
      throw e;
    }
    return answer;
  }

  /** Calls `handler(event)` for every event named `name`; returns a
   * function that removes it. */
  on(name, handler) {
    const set = this.handlers.get(name) ?? new Set();
    set.add(handler);
    this.handlers.set(name, set);
    this._startInbox();
    this._serial(() => this._unpark(name));
    return () => this.off(name, handler);
  }

  off(name, handler) {
    this.handlers.get(name)?.delete(handler);
  }

  /** Calls `handler({ type, clientId, room })` for join, leave, connect and
   * disconnect events of the rooms this client is in. */
  onPresence(handler) {
    this.presence.add(handler);
    this._startInbox();
    return () => this.presence.delete(handler);
  }

  _startInbox() {
    if (this.inbox || this.client._closed) return;
    const topic = `_inbox.${this.client.clientId}`;
    this.inbox = this.client.subscribe(topic, { group: INBOX_GROUP, start: "resume", prefetch: INBOX_PREFETCH });
    (async () => {
      try {
        for await (const m of this.inbox) await this._serial(() => this._dispatch(new RoomEvent(this, m)));
      } catch (e) {
        this.client._emit("error", { error: e, context: "reading the inbox" });
      }
    })();
  }

  /** Runs `f` after everything queued before it: handlers never overlap. */
  _serial(f) {
    this.tail = this.tail.then(f).catch((e) => this.client._emit("error", { error: e, context: "event handler" }));
    return this.tail;
  }

  async _dispatch(ev) {
    if (ev.kind === "reply") {
      const w = this.waiters.get(ev.correlation);
      if (w) {
        clearTimeout(w.timer);
        this.waiters.delete(ev.correlation);
        w.resolve(ev);
      }
      ev._message.ack();
      return;
    }
    if (ev.kind === "presence") {
      const p = { type: ev.name, clientId: ev.sender, room: ev.room };
      for (const h of this.presence) await h(p);
      ev._message.ack();
      return;
    }
    const hs = this.handlers.get(ev.name);
    if (!hs || hs.size === 0) {
      // A redelivery (ack timeout) replaces the copy already kept.
      this.parked = this.parked.filter((e) => e.offset !== ev.offset);
      this.parked.push(ev);
      return;
    }
    await this._handle(ev, hs);
  }

  async _handle(ev, hs) {
    try {
      for (const h of [...hs]) await h(ev);
      ev._message.ack();
    } catch (e) {
      // Redelivered later (up to the group's max deliveries).
      ev._message.nack(1000);
      throw e;
    }
  }

  async _unpark(name) {
    const now = this.parked.filter((e) => e.name === name);
    this.parked = this.parked.filter((e) => e.name !== name);
    for (const ev of now) await this._handle(ev, this.handlers.get(name) ?? new Set());
  }

  /** Kept events are delivered again on the next connection. */
  _onDisconnected() {
    this.parked = [];
  }

  _close(err) {
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }
}

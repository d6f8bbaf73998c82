// Rooms and events (docs/rooms.md): Join, Leave, Emit, Members, Reply and
// MyRooms requests, and the group subscriptions through which events reach
// this client, merged into one stream of events for the handlers:
//
// - its inbox, the topic `_inbox.<client id>` read by the group "inbox":
//   direct emits, requests, replies and emits to everyone;
// - the log of each room it joined, the topic `_room.<room>` read by the
//   group named after its client id, started once the Join is Ok (and, for
//   the rooms a restarted process is still a member of, at first use, from
//   MyRooms).
//
// What is not for the application is acked and dropped here: presence
// about this client itself, its own broadcasts (the room's log holds them
// for everyone else), and a second copy of an event emitted to several of
// its rooms (the same `herald-emit` id; the last SEEN_EMITS are kept).
// Kept apart from the connection code so that a change of how room events
// travel touches only this module.
//
// Handlers run one at a time, each source in its own order (there is no
// order between a room and another, or a room and the inbox); an event is
// acked, in the subscription it came from, once its handlers have returned
// (or their promises resolved). An event nobody handles yet is kept,
// unacked, until a handler for its name is added.

import { HeraldError, invalidArgument, protocolError } from "./errors.js";
import { toBytes } from "./batch.js";
import { TextCache, asciiCodes, bytesEqual, decodeText } from "./text.js";

const text = new TextDecoder();

/** Header names of event records (herald_protocol::rooms::headers). */
export const H = Object.freeze({
  kind: "herald-kind",
  sender: "herald-sender",
  room: "herald-room",
  replyTo: "herald-reply-to",
  correlation: "herald-correlation",
  exceptSender: "herald-except-sender",
  emit: "herald-emit",
});

/** The topic of a room's log. */
export const ROOM_PREFIX = "_room.";
const INBOX_GROUP = "inbox";
/** The prefetch window of the inbox and room subscriptions. A window
 * that runs out inside a stored batch makes the broker send the batch
 * again for the rest of it (every byte received, CRC-checked and parsed a
 * second time): with 256, a quarter of what a room's members took in
 * (100 members, 64 emits in flight). With 4096 that is gone, and the
 * rooms benchmark went from 1.6-1.7 M to 1.8-2.0 M deliveries/s
 * (docs/performance.md). The byte window (1 MiB) still bounds what a
 * page holds. */
const PREFETCH = 4096;
/** Emit ids remembered to hand an event emitted to several rooms over
 * once. Their copies are appended together, so they arrive close together;
 * a page reloaded between two copies may see such an event twice. */
export const SEEN_EMITS = 4096;

const NAME = Object.freeze({
  kind: asciiCodes(H.kind),
  sender: asciiCodes(H.sender),
  room: asciiCodes(H.room),
  replyTo: asciiCodes(H.replyTo),
  correlation: asciiCodes(H.correlation),
  exceptSender: asciiCodes(H.exceptSender),
  emit: asciiCodes(H.emit),
});

/** The fields of an event that its headers give, from `from` to `to`. */
function copyHeaderFields(to, from) {
  to.kind = from.kind;
  to.sender = from.sender;
  to.room = from.room;
  to.emitId = from.emitId;
  to.replyTo = from.replyTo;
  to._correlation = from._correlation;
  to.exceptSender = from.exceptSender;
}

/**
 * Reads the event fields of records in one pass over their headers, with
 * the last text of each field kept (the same sender, room and kind come
 * again event after event): one per Rooms, used by one event at a time.
 */
class EventReader {
  constructor() {
    this.name = new TextCache();
    this.kind = new TextCache();
    this.sender = new TextCache();
    this.room = new TextCache();
    this.ev = null;
    // The headers read last (batch, position) and what they said: a
    // record whose headers are the same bytes (Record._sameHeadersAs)
    // takes those fields without reading its own.
    this.lastB = null;
    this.lastAt = -1;
    this.last = { kind: undefined, sender: undefined, room: undefined, emitId: undefined, replyTo: undefined, _correlation: undefined, exceptSender: false };
  }

  read(ev, rec) {
    ev.name = rec._keyLen > 0 ? this.name.get(rec._b, rec._keyAt, rec._keyLen) : "";
    const last = this.last;
    if (rec._sameHeadersAs >= 0 && rec._sameHeadersAs === this.lastAt && rec._b === this.lastB) {
      copyHeaderFields(ev, last);
      return;
    }
    this.ev = ev;
    rec.scanHeaders(this);
    this.ev = null;
    this.lastB = rec._b;
    this.lastAt = rec._headersAt;
    copyHeaderFields(last, ev);
  }

  /** The header visitor: the first header of each name counts. */
  header(b, at, len, valueAt, valueLen) {
    const ev = this.ev;
    // Told apart by length and the byte after "herald-", then compared whole.
    switch (len) {
      case 11:
        if (b[at + 7] === 0x6b && bytesEqual(b, at, len, NAME.kind)) {
          if (ev.kind === undefined) ev.kind = this.kind.get(b, valueAt, valueLen);
        } else if (b[at + 7] === 0x72 && bytesEqual(b, at, len, NAME.room)) {
          if (ev.room === undefined) ev.room = this.room.get(b, valueAt, valueLen);
        } else if (bytesEqual(b, at, len, NAME.emit)) {
          if (ev.emitId === undefined) ev.emitId = decodeText(b, valueAt, valueLen);
        }
        return;
      case 13:
        if (bytesEqual(b, at, len, NAME.sender) && ev.sender === undefined) ev.sender = this.sender.get(b, valueAt, valueLen);
        return;
      case 15:
        if (bytesEqual(b, at, len, NAME.replyTo) && ev.replyTo === undefined) ev.replyTo = decodeText(b, valueAt, valueLen);
        return;
      case 18:
        if (bytesEqual(b, at, len, NAME.correlation) && ev._correlation === undefined) ev._correlation = decodeText(b, valueAt, valueLen);
        return;
      case 20:
        if (bytesEqual(b, at, len, NAME.exceptSender)) ev.exceptSender = true;
        return;
      default:
    }
  }
}

/** One event from the inbox or a room's log. */
export class RoomEvent {
  /** A record of `sub` (group subscriptions only), as an event. */
  constructor(rooms, sub, rec, deliveryCount) {
    this._rooms = rooms;
    this._sub = sub;
    this._rec = rec;
    this.name = "";
    /** "event", "presence" or "reply" */
    this.kind = undefined;
    this.sender = undefined;
    /** Where it was read: `_inbox.<client id>` or `_room.<room>`. */
    this.topic = sub.topic;
    this.room = undefined;
    /** Position in `topic`: increases with every event of that topic. */
    this.offset = rec.offset;
    this.timestamp = rec.timestamp;
    this.deliveryCount = deliveryCount;
    this._correlation = undefined;
    this.replyTo = undefined;
    /** The id shared by the copies of an emit to several rooms. */
    this.emitId = undefined;
    this.exceptSender = false;
    rooms._reader.read(this, rec);
    this.kind ??= "event";
    this.sender ??= "";
    if (this.room === undefined) this.room = this.topic.startsWith(ROOM_PREFIX) ? this.topic.slice(ROOM_PREFIX.length) : null;
    this.correlation = this._correlation === undefined ? 0 : Number(this._correlation);
    this.replyTo ??= null;
    this.emitId ??= null;
  }

  /** The payload (a view of the delivered batch). */
  get payload() {
    return this._rec.payload;
  }

  /** Done with it (queued; sent within ACK_DELAY_MS, 20 ms). */
  _ack() {
    this._sub._ack(this.offset);
  }

  /** Not done: delivered again after `delayMs`. */
  _nack(delayMs) {
    this._sub._control({ Nack: { delay_ms: delayMs } }, this.offset);
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

/** Whether `v` is a promise (or any thenable) to wait for. */
function isPromise(v) {
  return v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";
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
     * after every reconnect (before the subscriptions are renewed), in
     * case the broker's grace period ran out. */
    this.joined = new Map();
    /** The subscription reading each joined room's log. */
    this.reading = new Map();
    this.handlers = new Map();
    this.presence = new Set();
    /** Requests waiting for their reply, by correlation id. */
    this.waiters = new Map();
    /** Events with no handler yet, in the order they came. */
    this.parked = [];
    this.inbox = null;
    /** Started at first use: the inbox, then the rooms from MyRooms. */
    this.hub = null;
    /** Emit id → "topic@offset" of the copy handed over, oldest first. */
    this.seen = new Map();
    // A random start: a reply left in the inbox by an earlier run of this
    // client cannot match a new request.
    this.nextCorrelation = 1 + Math.floor(Math.random() * 2 ** 40);
    /** Events and tasks for the handlers, in order, from `head` on. */
    this.queue = [];
    this.head = 0;
    /** The queue is being run (or waits for a handler's promise). */
    this.running = false;
    this._reader = new EventReader();
  }

  /** Joins, then reads the room's log; resolves once it is being read. */
  async join(room, durable, { history = 0 } = {}) {
    if (!Number.isInteger(history) || history < 0 || history > 0xffffffff) {
      throw invalidArgument(`history ${history}: a number of records, 0 to 2^32-1`);
    }
    const m = await this.client._request("Join", { room, durable, history });
    if (m.op !== "Ok") throw protocolError(`${m.op} answered Join`);
    this.joined.set(room, durable);
    await this._hub();
    await this._read(room);
  }

  /** Stops reading the room's log, then leaves (the broker forgets this
   * member's position: joining again starts afresh). */
  async leave(room) {
    const durable = this.joined.get(room);
    this.joined.delete(room);
    const sub = this.reading.get(room);
    this.reading.delete(room);
    await sub?.close();
    try {
      const m = await this.client._request("Leave", { room });
      if (m.op !== "Ok") throw protocolError(`${m.op} answered Leave`);
    } catch (e) {
      // Still a member: read it again.
      if (durable !== undefined && !this.client._closed) {
        this.joined.set(room, durable);
        this._read(room).catch(() => {});
      }
      throw e;
    }
  }

  /** Called on every new connection, before subscriptions are renewed. */
  _rejoin() {
    for (const [room, durable] of this.joined) {
      this.client._request("Join", { room, durable, history: 0 }, { onLost: () => {} }).catch((e) => {
        this.client._emit("error", { error: e, context: `rejoining ${room}` });
      });
    }
  }

  async members(room) {
    const m = await this.client._request("Members", { room });
    if (m.op !== "MemberList") throw protocolError(`${m.op} answered Members`);
    return m.body.members.map((x) => ({ clientId: x.client_id, online: x.online }));
  }

  /** The rooms this client id is a member of: [{ room, durable }]. */
  async myRooms() {
    const m = await this.client._request("MyRooms", null);
    if (m.op !== "RoomList") throw protocolError(`${m.op} answered MyRooms`);
    return m.body.rooms;
  }

  /** Emits; resolves with { recipients, skipped } once every append (room
   * logs, inboxes) is durable. */
  async emit(to, event, data, correlation = 0) {
    if (!event) throw invalidArgument("empty event name");
    const body = { target: target(to), event, payload: toBytes(data), correlation };
    const m = await this.client._request("Emit", body);
    if (m.op !== "EmitOk") throw protocolError(`${m.op} answered Emit`);
    return { recipients: m.body.recipients, skipped: m.body.skipped };
  }

  /** Sends `event` to one client and resolves with its reply event. */
  async request(clientId, event, data, { timeoutMs = 30000 } = {}) {
    this._use();
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
    // A new array each time: an event being handled keeps the list it
    // started with.
    const list = this.handlers.get(name) ?? [];
    if (!list.includes(handler)) this.handlers.set(name, [...list, handler]);
    this._use();
    this._serial(() => this._unpark(name));
    return () => this.off(name, handler);
  }

  off(name, handler) {
    const list = this.handlers.get(name);
    if (list?.includes(handler)) this.handlers.set(name, list.filter((h) => h !== handler));
  }

  /** Calls `handler({ type, clientId, room })` for join, leave, connect and
   * disconnect events of the rooms this client is in (not its own). */
  onPresence(handler) {
    this.presence.add(handler);
    this._use();
    return () => this.presence.delete(handler);
  }

  /** Starts reading (in the background) if not yet. */
  _use() {
    this._hub().catch((e) => this.client._emit("error", { error: e, context: "starting to read events" }));
  }

  /** The inbox, and the logs of the rooms this client id is already a
   * member of (a process that starts again with the same id, or a page
   * reloaded, gets what its rooms were sent meanwhile). Once. */
  _hub() {
    this.hub ??= this._startHub().catch((e) => {
      this.hub = null;
      throw e;
    });
    return this.hub;
  }

  async _startHub() {
    if (this.client._closed) return;
    if (!this.inbox) {
      this.inbox = this.client.subscribe(`_inbox.${this.client.clientId}`, { group: INBOX_GROUP, start: "resume", prefetch: PREFETCH });
      this._loop(this.inbox, null);
    }
    for (const r of await this.myRooms()) {
      if (!this.joined.has(r.room)) this.joined.set(r.room, r.durable);
      await this._read(r.room);
    }
  }

  /** Reads a joined room's log (once), as the group named after this
   * client id; resolves once the broker confirmed the subscription. */
  async _read(room) {
    let sub = this.reading.get(room);
    if (!sub) {
      if (this.client._closed) return;
      const onSkipped = ({ topic, first, last }) => this.client._emit("skipped", { room, topic, first, last });
      sub = this.client.subscribe(ROOM_PREFIX + room, { group: this.client.clientId, start: "resume", prefetch: PREFETCH, onSkipped });
      this.reading.set(room, sub);
      this._loop(sub, room);
    }
    await sub.ready;
  }

  /** Hands the events of one subscription to the handlers, in order. */
  _loop(sub, room) {
    sub._handTo({
      message: (rec, deliveryCount) => {
        const ev = new RoomEvent(this, sub, rec, deliveryCount);
        // A reply runs no handler: not queued behind one (which may be
        // waiting for this very reply).
        if (ev.kind === "reply") this._reply(ev);
        else this._enqueue(ev);
      },
      skipped: (tell) => this._enqueue(tell),
      end: (e) => {
        if (e === null) return;
        if (room === null) {
          this.client._emit("error", { error: e, context: "reading the inbox" });
        } else if (this.reading.get(room) === sub) {
          // Over (refused, ended by the broker): joining again reads anew.
          this.reading.delete(room);
          this.client._emit("error", { error: e, context: `reading room ${room}` });
        }
      },
    });
  }

  /** Runs `f` after everything queued before it: handlers never overlap. */
  _serial(f) {
    this._enqueue(f);
  }

  /** Queues an event (or a task: a function) for the handlers. */
  _enqueue(item) {
    this.queue.push(item);
    if (!this.running) this._drain();
  }

  /**
   * Runs the queue in order, one item at a time. A handler that returns
   * (not a promise) is followed by the next item at once, without a turn
   * of the microtask queue; one that returns a promise holds the queue
   * until it settles.
   */
  _drain() {
    this.running = true;
    while (this.head < this.queue.length) {
      const item = this.queue[this.head];
      this.queue[this.head++] = undefined;
      if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      let r;
      try {
        r = typeof item === "function" ? item() : this._dispatch(item);
      } catch (e) {
        this._failed(e);
        continue;
      }
      if (isPromise(r)) {
        r.then(
          () => this._drain(),
          (e) => {
            this._failed(e);
            this._drain();
          },
        );
        return;
      }
    }
    this.queue = [];
    this.head = 0;
    this.running = false;
  }

  _failed(e) {
    this.client._emit("error", { error: e, context: "event handler" });
  }

  /** Whether `ev` goes to the application; if not, it is only acked. */
  _forApp(ev) {
    const own = ev.sender === this.client.clientId;
    if (own && (ev.kind === "presence" || ev.exceptSender)) return false;
    if (ev.emitId === null) return true;
    const at = `${ev.topic}@${ev.offset}`;
    const first = this.seen.get(ev.emitId);
    if (first === undefined) {
      this.seen.set(ev.emitId, at);
      if (this.seen.size > SEEN_EMITS) this.seen.delete(this.seen.keys().next().value);
      return true;
    }
    // The copy handed over may come again (redelivered, or kept without a
    // handler across a reconnect); another copy is a duplicate.
    return first === at;
  }

  /** A reply: to the request waiting for it (none: a late one), acked. */
  _reply(ev) {
    if (this._forApp(ev)) {
      const w = this.waiters.get(ev.correlation);
      if (w) {
        clearTimeout(w.timer);
        this.waiters.delete(ev.correlation);
        w.resolve(ev);
      }
    }
    ev._ack();
  }

  /** Hands one event over; a promise if a handler has not finished. */
  _dispatch(ev) {
    if (!this._forApp(ev)) {
      ev._ack();
      return undefined;
    }
    if (ev.kind === "presence") return this._presence(ev);
    const hs = this.handlers.get(ev.name);
    if (!hs || hs.length === 0) {
      // A redelivery (ack timeout) replaces the copy already kept.
      this.parked = this.parked.filter((e) => e.topic !== ev.topic || e.offset !== ev.offset);
      this.parked.push(ev);
      return undefined;
    }
    return this._handle(ev, hs);
  }

  _presence(ev) {
    const p = { type: ev.name, clientId: ev.sender, room: ev.room };
    const hs = [...this.presence];
    for (let i = 0; i < hs.length; i++) {
      const r = hs[i](p);
      if (isPromise(r)) {
        return (async () => {
          await r;
          for (let j = i + 1; j < hs.length; j++) await hs[j](p);
          ev._ack();
        })();
      }
    }
    ev._ack();
    return undefined;
  }

  /** Runs the handlers (`hs`, a snapshot: on/off make a new array), then
   * acks; a handler that throws (or rejects) nacks it instead. */
  _handle(ev, hs) {
    for (let i = 0; i < hs.length; i++) {
      let r;
      try {
        r = hs[i](ev);
      } catch (e) {
        // Redelivered later (up to the group's max deliveries).
        ev._nack(1000);
        throw e;
      }
      if (isPromise(r)) return this._handleRest(ev, hs, i, r);
    }
    ev._ack();
    return undefined;
  }

  async _handleRest(ev, hs, i, pending) {
    try {
      await pending;
      for (let j = i + 1; j < hs.length; j++) await hs[j](ev);
      ev._ack();
    } catch (e) {
      ev._nack(1000);
      throw e;
    }
  }

  async _unpark(name) {
    const now = this.parked.filter((e) => e.name === name);
    this.parked = this.parked.filter((e) => e.name !== name);
    for (const ev of now) await this._handle(ev, this.handlers.get(name) ?? []);
  }

  /** Kept events, and queued ones no handler has started, are delivered
   * again on the next connection (they are not acked). */
  _onDisconnected() {
    this.parked = [];
    const tasks = [];
    for (let i = this.head; i < this.queue.length; i++) {
      if (typeof this.queue[i] === "function") tasks.push(this.queue[i]);
    }
    this.queue = tasks;
    this.head = 0;
  }

  _close(err) {
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }
}

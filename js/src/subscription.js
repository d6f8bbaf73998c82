// A subscription: an async iterable of messages that survives reconnects.
//
// Group subscriptions resume at the group's committed position; the
// messages the application acked are remembered until the broker confirms
// the ack durable, and a redelivery of one of them is dropped before the
// application sees it, so within one client the application never gets a
// message again after acking it. Acks made while the connection is down,
// or sent on a connection that dropped before confirming them, are sent
// once the broker confirms the new subscription. Ephemeral subscriptions
// resume right after the last message handed to the application, and give
// credit back (Flow) as messages are consumed. A group whose undelivered
// offsets retention deleted is told (the broker's Skipped push): the
// subscription goes on, and `onSkipped` (else the client's "skipped"
// event) hears of it in its place among the messages.

import { encodeFrame } from "./codec.js";
import { HeraldError } from "./errors.js";
import { startPosition } from "./client.js";
import { asciiCodes, bytesEqual, decodeText } from "./text.js";

const text = new TextDecoder();

/**
 * Acks are gathered this long into one frame, or sent at once when half
 * the subscription's prefetch window (at most ACK_BATCH) is pending, so
 * the broker never waits for them, or when `ackConfirmed` asks. Each ack
 * frame costs a socket write both ways and a state update at the broker;
 * a member of a busy room gets a Deliver every few tens of milliseconds,
 * and gathering for 20 ms instead of 1 ms cut the CPU per delivered event
 * (client and broker together) by about a fifth (docs/performance.md).
 * What it widens: an event acked in the last 20 ms before a page goes
 * away may come again to the next page (docs/web.md, "Guarantees").
 */
export const ACK_DELAY_MS = 20;
const ACK_BATCH = 256;
/**
 * Most Ack frames of one subscription sent without a request id (so
 * without a reply) before one that asks the broker to confirm them all.
 * The broker applies a subscription's acks in order and writes whole
 * states, so the Ok to one frame confirms every frame sent before it on
 * the connection (docs/protocol.md, section 6.4); an Ok per frame was a
 * third of the messages per event for a member of a small room, which
 * acks about every event on its own. Until then the unconfirmed frames
 * keep filtering redeliveries and are sent again after a reconnect.
 * ackConfirmed, closing and leaving ask at once. As the Rust client.
 */
export const UNCONFIRMED_MAX = 16;

/** Inclusive [first, last] ranges, sorted and merged (overlapping or
 * adjacent ones become one). */
export function mergeRanges(ranges) {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** Whether `o` is in one of `ranges`. */
function inRanges(ranges, o) {
  for (const [a, b] of ranges) if (o >= a && o <= b) return true;
  return false;
}

/**
 * Offsets as ranges: acks mostly come in order, so adding one extends the
 * last range (no allocation, no per-offset entry); out of order it starts
 * another, and `take` sorts and merges.
 */
export class Ranges {
  constructor() {
    this.ranges = [];
    /** Offsets added since the last take (repeats counted). */
    this.added = 0;
  }

  add(o) {
    const last = this.ranges[this.ranges.length - 1];
    if (last !== undefined && o === last[1] + 1) last[1] = o;
    else this.ranges.push([o, o]);
    this.added++;
  }

  addRanges(list) {
    for (const r of list) this.ranges.push([r[0], r[1]]);
    this.added += list.length;
  }

  has(o) {
    return inRanges(this.ranges, o);
  }

  get empty() {
    return this.ranges.length === 0;
  }

  /** The ranges, sorted and merged; empties this. */
  take() {
    const out = mergeRanges(this.ranges);
    this.ranges = [];
    this.added = 0;
    return out;
  }
}

/** One record delivered to a subscription. */
export class Message {
  constructor(sub, rec, deliveryCount) {
    this._sub = sub;
    this._rec = rec;
    this.topic = sub.topic;
    this.offset = rec.offset;
    this.timestamp = rec.timestamp;
    this.deliveryCount = deliveryCount;
  }

  /** The key (a view of the delivered batch), or null. */
  get key() {
    return this._rec.key;
  }

  /** [name, value] pairs, values as views of the delivered batch. */
  get headers() {
    return this._rec.headers;
  }

  /** The payload, a view of the delivered batch. */
  get payload() {
    return this._rec.payload;
  }

  /** The payload as UTF-8 text. */
  text() {
    return text.decode(this.payload);
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }

  /** A header's value as text (the first of that name), or undefined. */
  header(name) {
    const want = asciiCodes(name);
    if (want === null) {
      const h = this.headers.find(([n]) => n === name);
      return h ? text.decode(h[1]) : undefined;
    }
    const found = { want, value: undefined };
    this._rec.scanHeaders({
      header(b, nameAt, nameLen, valueAt, valueLen) {
        if (found.value === undefined && bytesEqual(b, nameAt, nameLen, found.want)) found.value = decodeText(b, valueAt, valueLen);
      },
    });
    return found.value;
  }

  /** Done with this message (queued; sent within ACK_DELAY_MS, 20 ms). */
  ack() {
    this._sub._ack(this.offset);
  }

  /** Acks, and resolves once the broker has written the ack durably. */
  ackConfirmed() {
    return this._sub._ack(this.offset, true);
  }

  /** Not done: the broker delivers it again after `delayMs`. */
  nack(delayMs = 0) {
    this._sub._control({ Nack: { delay_ms: delayMs } }, this.offset);
  }

  /** Never deliver it again (counts as done). */
  terminate() {
    this._sub._control("Terminate", this.offset);
  }
}

/** A Skipped push waiting in the queue for the messages before it. */
class Skip {
  constructor(info) {
    this.info = info;
  }
}

export class Subscription {
  constructor(client, topic, o) {
    this.client = client;
    this.topic = topic;
    this.group = o.group ?? null;
    this._start = startPosition(o.start ?? "resume");
    this._window = [o.prefetch ?? 256, o.prefetchBytes ?? 1 << 20];
    this._ackTimeoutMs = o.ackTimeoutMs ?? 0;
    this._maxDeliveries = o.maxDeliveries ?? 0;
    this._onSkipped = o.onSkipped ?? ((info) => client._emit("skipped", info));
    this._brokerId = null;
    this._epoch = 0;
    this._queue = [];
    this._waiters = [];
    this._ended = false;
    this._error = null;
    /** Offsets acked by the application and not sent on the current
     * connection yet. */
    this._unsent = new Ranges();
    /** Ack frames sent and not confirmed durable (or refused): their
     * ranges, still acked by the application. */
    this._sentAcks = [];
    /** The highest offset the application ever acked here: a delivery
     * past it (every fresh one) cannot be among the acked, and is not
     * looked up in them. */
    this._ackedMax = -1;
    /** Of those, the frames sent without a request id on this connection
     * since the last one that asked for a confirm. */
    this._unconfirmed = [];
    /** Being closed: every ack frame asks for a confirm. */
    this._closing = false;
    /** Callers of ackConfirmed, by offset. */
    this._ackWaiters = new Map();
    this._ackTimer = null;
    this._inflightAcks = 0;
    /** Ephemeral resume point: one past the last message handed out. */
    this._next = null;
    /** A SubscribeOk came: a group resubscribes with Resume from then on. */
    this._subscribed = false;
    this._credit = [0, 0];
    /** Set by `_handTo`: messages and Skipped notices go straight to it
     * instead of the iterator's queue. */
    this._sink = null;
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
    this.ready.catch(() => {}); // the iterator reports it too
  }

  _resubscribe() {
    if (this._ended) return;
    const epoch = ++this._epoch;
    // After the first SubscribeOk the start position has done its work: a
    // group resumes where it is (a Subscribe naming a start moves a group
    // with no members there, and would hand acked messages out again), an
    // ephemeral subscription carries on after the last message handed out.
    let start = this._start;
    if (this.group === null && this._next !== null) start = { Offset: this._next };
    else if (this.group !== null && this._subscribed) start = "Resume";
    const body = {
      topic: this.topic,
      group: this.group,
      start,
      prefetch_messages: this._window[0],
      prefetch_bytes: this._window[1],
      ack_timeout_ms: this._ackTimeoutMs,
      max_deliveries: this._maxDeliveries,
    };
    this._credit = [0, 0];
    if (this.client._closed) return;
    this.client._requestSync("Subscribe", body, {
      onLost: () => {},
      sync: (m, err) => (err ? this._onRefused(epoch, err) : this._onSubscribed(epoch, m.body)),
    });
  }

  _onSubscribed(epoch, ok) {
    if (epoch !== this._epoch || this._ended) {
      // Subscribed after the application closed it: undo.
      if (this._ended) this.client._request("Unsubscribe", { subscription_id: ok.subscription_id }, { onLost: (r) => r() }).catch(() => {});
      return;
    }
    this._brokerId = ok.subscription_id;
    this._subscribed = true;
    this.client._byBrokerId.set(ok.subscription_id, this);
    if (this.group === null && this._next === null) this._next = ok.start_offset;
    this._ready.resolve(this);
    // Acks made while down, or lost with the last connection.
    for (const ranges of this._sentAcks) this._unsent.addRanges(ranges);
    this._sentAcks = [];
    this._flushAcks();
  }

  _onRefused(epoch, e) {
    if (epoch !== this._epoch) return;
    this._end(e);
  }

  _onDisconnected() {
    this._brokerId = null;
    this._inflightAcks = 0;
    // Still in _sentAcks: sent again once subscribed again.
    this._unconfirmed = [];
    // Delivered but not yet handed out: the broker delivers them again
    // on the next connection (unacked in a group; after the resume point
    // of an ephemeral subscription). A Skipped notice is not: it stays.
    this._queue = this._queue.filter((m) => m instanceof Skip);
  }

  _deliver(d) {
    const records = d.parsed.records;
    const before = this._queue.length;
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      if (r.offset < d.first_offset || r.offset > d.last_offset) continue;
      // Acked here, not yet durable at the broker: the app is done with it.
      if (this._isAcked(r.offset)) continue;
      if (this._sink !== null) {
        this._taken(r.offset);
        this._sink.message(r, d.delivery_count);
      } else {
        this._queue.push(new Message(this, r, d.delivery_count));
      }
    }
    if (this.group === null) this._giveCredit(0, d.batch.length);
    // Waiting readers take what came, in order.
    if (before === 0) this._wake();
  }

  /** Hands queued messages to readers waiting in `next()`. */
  _wake() {
    while (this._waiters.length > 0 && this._queue.length > 0) {
      const m = this._queue[0];
      if (m instanceof Skip) {
        this._queue.shift();
        this._tellSkipped(m);
        continue;
      }
      this._queue.shift();
      this._taken(m.offset);
      this._waiters.shift().resolve({ value: m, done: false });
    }
    // A Skipped notice that nothing is queued before is told at once.
    while (this._queue.length > 0 && this._queue[0] instanceof Skip) this._tellSkipped(this._queue.shift());
  }

  _push(m) {
    if (this._sink !== null) {
      if (m instanceof Skip) this._sink.skipped(() => this._tellSkipped(m));
      else {
        this._taken(m.offset);
        this._sink.message(m._rec, m.deliveryCount);
      }
      return;
    }
    this._queue.push(m);
    if (this._queue.length === 1) this._wake();
  }

  /**
   * Instead of the iterator: every message from now on goes to
   * `sink.message(record, deliveryCount)` as it arrives (it is then the
   * application's, acked with `_ack(record.offset)`; no Message made), a
   * Skipped notice to `sink.skipped(tell)` (call `tell` in its place among
   * the messages), and the end to `sink.end(error)` (error null: closed).
   * For a reader that keeps its own queue (rooms.js): no promise per message.
   */
  _handTo(sink) {
    this._sink = sink;
    for (const m of this._queue.splice(0)) this._push(m);
    if (this._ended) sink.end(this._error);
  }

  /** The broker's Skipped push: told after the messages queued before it. */
  _skipped(s) {
    this._push(new Skip({ topic: this.topic, group: this.group, first: s.first, last: s.last }));
  }

  _tellSkipped(skip) {
    try {
      this._onSkipped(skip.info);
    } catch (e) {
      this.client._emit("error", { error: e, context: "skipped handler" });
    }
  }

  /** A message goes to the application. */
  _taken(offset) {
    if (this.group === null) {
      this._next = offset + 1;
      this._giveCredit(1, 0);
    }
  }

  /** Returns credit once half the window is used. */
  _giveCredit(messages, bytes) {
    this._credit[0] += messages;
    this._credit[1] += bytes;
    const [wm, wb] = this._window;
    if (this._credit[0] < Math.ceil(wm / 2) && this._credit[1] < Math.ceil(wb / 2)) return;
    if (this._brokerId !== null) {
      const [m, b] = this._credit;
      this.client._send(encodeFrame("Flow", 0, { subscription_id: this._brokerId, messages: m, bytes: b }));
    }
    this._credit = [0, 0];
  }

  /** Whether the application acked `offset` and the broker has not
   * confirmed it durable yet (its redelivery is dropped). */
  _isAcked(offset) {
    if (offset > this._ackedMax) return false;
    if (!this._unsent.empty && this._unsent.has(offset)) return true;
    for (let i = 0; i < this._sentAcks.length; i++) if (inRanges(this._sentAcks[i], offset)) return true;
    return false;
  }

  _ack(offset, confirmed = false) {
    if (this.group === null) return confirmed ? Promise.resolve() : undefined;
    this._unsent.add(offset);
    if (offset > this._ackedMax) this._ackedMax = offset;
    let p;
    if (confirmed) {
      p = new Promise((resolve, reject) => {
        const ws = this._ackWaiters.get(offset) ?? [];
        ws.push({ resolve, reject });
        this._ackWaiters.set(offset, ws);
      });
    }
    if (confirmed || this._unsent.added >= Math.min(ACK_BATCH, Math.ceil(this._window[0] / 2))) this._flushAcks();
    else if (this._ackTimer === null) this._ackTimer = setTimeout(() => this._flushAcks(), ACK_DELAY_MS);
    return p;
  }

  /** Settles the ackConfirmed callers whose offset is in `ranges`. */
  _settleWaiters(ranges, error) {
    if (this._ackWaiters.size === 0) return;
    for (const [o, ws] of this._ackWaiters) {
      if (!inRanges(ranges, o)) continue;
      for (const w of ws) {
        if (error) w.reject(error);
        else w.resolve();
      }
      this._ackWaiters.delete(o);
    }
  }

  /** Sends the acks not yet sent, as ranges: without a request id, or,
   * one frame in UNCONFIRMED_MAX (and with `confirm`, or when a caller of
   * ackConfirmed waits), with one: the broker answers Ok once it and the
   * frames before it are durable. With `confirm` and nothing new, the last
   * unconfirmed frame goes again, asking (acking twice does nothing). */
  _flushAcks(confirm = false) {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (this._brokerId === null || !this.client.connected) return;
    let ranges;
    if (!this._unsent.empty) {
      ranges = this._unsent.take();
      this._sentAcks.push(ranges);
    } else if (confirm && this._unconfirmed.length > 0) {
      ranges = this._unconfirmed.pop();
    } else {
      return;
    }
    const body = { subscription_id: this._brokerId, kind: "Ack", ranges };
    // Closing (the subscription or the client) waits for every ack to be
    // confirmed: each frame from then on asks.
    if (this._closing || this.client._closing) confirm = true;
    if (!confirm && this._ackWaiters.size === 0 && this._unconfirmed.length + 1 < UNCONFIRMED_MAX) {
      this._unconfirmed.push(ranges);
      this.client._send(encodeFrame("Ack", 0, body));
      return;
    }
    const covered = this._unconfirmed;
    this._unconfirmed = [];
    this._inflightAcks++;
    const epoch = this._epoch;
    this.client._request("Ack", body, { onLost: () => {} }).then(
      () => {
        if (epoch === this._epoch) this._inflightAcks--;
        for (const r of [...covered, ranges]) {
          const i = this._sentAcks.indexOf(r);
          if (i >= 0) this._sentAcks.splice(i, 1);
          this._settleWaiters(r, null);
        }
      },
      (e) => {
        if (epoch === this._epoch) this._inflightAcks--;
        // Not written (a full disk): the broker keeps it in memory and
        // retries; it is sent again after a reconnect in case the broker
        // restarted meanwhile. Redeliveries stay filtered.
        this._settleWaiters(ranges, e);
      },
    );
  }

  _acksPending() {
    return !this._unsent.empty || this._inflightAcks > 0 || this._unconfirmed.length > 0;
  }

  _control(kind, offset) {
    if (this.group === null || this._brokerId === null) return;
    const body = { subscription_id: this._brokerId, kind, ranges: [[offset, offset]] };
    this.client._send(encodeFrame("Ack", 0, body));
  }

  /** Ends the iteration: with `error` (thrown to the reader) or without. */
  _end(error) {
    if (this._ended) return;
    this._ended = true;
    this._error = error;
    if (error) this._ready.reject(error);
    this._sink?.end(error);
    for (const w of this._waiters.splice(0)) {
      if (error) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** The next message: { value, done }. */
  next() {
    let m = this._queue.shift();
    while (m instanceof Skip) {
      this._tellSkipped(m);
      m = this._queue.shift();
    }
    if (m) {
      this._taken(m.offset);
      return Promise.resolve({ value: m, done: false });
    }
    if (this._ended) {
      return this._error ? Promise.reject(this._error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Leaving a for-await loop closes the subscription. */
  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /**
   * Unsubscribes, after the acks made so far are confirmed (so leaving
   * cannot overtake them). Unacked messages of a group are delivered
   * again, to this or another member.
   */
  async close() {
    if (this._ended && this._brokerId === null) return;
    this._closing = true;
    this._flushAcks(true);
    const deadline = Date.now() + 5000;
    while (this._acksPending() && this.client.connected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 2));
    }
    const id = this._brokerId;
    this._end(null);
    this.client._subs.delete(this);
    this._brokerId = null;
    this._queue = [];
    if (id !== null && this.client.connected) {
      this.client._byBrokerId.delete(id);
      await this.client._request("Unsubscribe", { subscription_id: id }, { onLost: (r) => r() }).catch((e) => {
        if (!(e instanceof HeraldError)) throw e;
      });
    }
  }
}

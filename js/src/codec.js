// Frames and message bodies of the Herald protocol (docs/protocol.md
// sections 3, 4 and 6). A frame is a 16-byte little-endian header (length,
// opcode, flags, reserved, request id) and a body. Over a WebSocket the
// frames travel in binary messages whose boundaries mean nothing:
// FrameDecoder reassembles them from whatever chunks arrive.

import { protocolError } from "./errors.js";
import { parseBatch } from "./batch.js";
import * as pc from "./postcard.js";

export const HEADER_LEN = 16;
export const DEFAULT_MAX_FRAME = 8 * 1024 * 1024;
export const FLAG_PUSH = 0x01;
export const PROTOCOL_VERSION = 1;

/** Opcodes by name and number. */
export const OP = Object.freeze({
  Hello: 0x01,
  HelloOk: 0x02,
  Error: 0x03,
  Ping: 0x04,
  Pong: 0x05,
  GoingAway: 0x06,
  Ok: 0x07,
  Publish: 0x10,
  PublishOk: 0x11,
  Subscribe: 0x20,
  SubscribeOk: 0x21,
  Unsubscribe: 0x22,
  Deliver: 0x23,
  Ack: 0x24,
  Flow: 0x25,
  SubscriptionError: 0x26,
  CreateTopic: 0x30,
  DeleteTopic: 0x31,
  ListTopics: 0x32,
  DescribeTopic: 0x33,
  TopicInfo: 0x34,
  TopicList: 0x35,
  ListGroups: 0x36,
  GroupList: 0x37,
  ResetGroup: 0x38,
  RepairTopic: 0x39,
  RepairReport: 0x3a,
  Join: 0x40,
  Leave: 0x41,
  Emit: 0x42,
  EmitOk: 0x43,
  Members: 0x44,
  MemberList: 0x45,
  Reply: 0x46,
  Skipped: 0x47,
  MyRooms: 0x48,
  RoomList: 0x49,
  EmitBatch: 0x4a,
  EmitBatchOk: 0x4b,
  Refresh: 0x50,
  TokenExpiring: 0x51,
  Cluster: 0x60,
  ClusterReply: 0x61,
  ClusterStatus: 0x62,
  ClusterInfo: 0x63,
  ClusterChange: 0x64,
});
const NAMES = new Map(Object.entries(OP).map(([n, v]) => [v, n]));

/** The name of opcode `n`, or undefined for an unknown one. */
export const opName = (n) => NAMES.get(n);

const { struct, option, vec, tuple, enumeration, string, bool, u16, u32, u64, i64, f64, bytes } = pc;

const start = enumeration([
  ["Resume", null],
  ["Earliest", null],
  ["Latest", null],
  ["Offset", u64],
  ["Timestamp", i64],
]);
const fsync = enumeration([
  ["Always", null],
  ["Interval", struct([["ms", u32]])],
  ["Never", null],
]);
const topicConfig = struct([
  ["retention_bytes", option(u64)],
  ["retention_ms", option(u64)],
  ["segment_bytes", option(u64)],
  ["fsync", option(fsync)],
]);
const groupInfo = struct([
  ["name", string],
  ["ack_floor", u64],
  ["lag", u64],
  ["in_flight", u64],
  ["redelivered", u64],
  ["dead_lettered", u64],
  ["members", vec(string)],
  ["damaged", option(string)],
]);
const topicInfo = struct([
  ["name", string],
  ["config", topicConfig],
  ["first_offset", u64],
  ["next_offset", u64],
  ["bytes_on_disk", u64],
  ["segments", u32],
  ["messages_per_sec", f64],
  ["groups", vec(groupInfo)],
]);
const topicName = struct([["name", string]]);
const roomName = struct([["room", string]]);
const emitTarget = enumeration([
  ["Room", string],
  ["RoomExceptSender", string],
  ["Rooms", struct([["rooms", vec(string)], ["except_sender", bool]])],
  ["Client", string],
  ["All", null],
]);

const emit = struct([["target", emitTarget], ["event", string], ["payload", bytes], ["correlation", u64]]);
const emitOk = struct([["recipients", u32], ["skipped", u32]]);
const emitOutcome = enumeration([
  ["Ok", emitOk],
  ["Err", struct([["code", u16], ["message", string]])],
]);

/** Postcard body of each opcode; null: empty body; "raw": Publish, Deliver. */
const BODIES = {
  Hello: struct([
    ["min_version", u16],
    ["max_version", u16],
    ["client_name", string],
    ["client_id", option(string)],
    ["token", option(string)],
  ]),
  HelloOk: struct([
    ["version", u16],
    ["client_id", string],
    ["max_frame", u32],
    ["max_batch", u32],
    ["heartbeat_ms", u32],
    // Version 2 only; this client speaks version 1 and never gets it.
    ["ack_timeout_ms", pc.trailing(u32)],
  ]),
  Error: struct([["code", u16], ["message", string]]),
  Ping: null,
  Pong: null,
  GoingAway: struct([["reason", string]]),
  Ok: null,
  Publish: "raw",
  PublishOk: struct([["base_offset", pc.offsetOrUnknown], ["count", u32], ["duplicate", bool]]),
  Subscribe: struct([
    ["topic", string],
    ["group", option(string)],
    ["start", start],
    ["prefetch_messages", u32],
    ["prefetch_bytes", u32],
    ["ack_timeout_ms", u32],
    ["max_deliveries", u32],
  ]),
  SubscribeOk: struct([["subscription_id", u64], ["start_offset", u64]]),
  Unsubscribe: struct([["subscription_id", u64]]),
  Deliver: "raw",
  Ack: struct([
    ["subscription_id", u64],
    [
      "kind",
      enumeration([
        ["Ack", null],
        ["AckUpTo", null],
        ["Nack", struct([["delay_ms", u32]])],
        ["Extend", null],
        ["Terminate", null],
      ]),
    ],
    ["ranges", vec(tuple(u64, u64))],
  ]),
  Flow: struct([["subscription_id", u64], ["messages", u32], ["bytes", u32]]),
  SubscriptionError: struct([["subscription_id", u64], ["code", u16], ["message", string]]),
  CreateTopic: struct([["name", string], ["config", topicConfig], ["replicas", u32]]),
  DeleteTopic: topicName,
  ListTopics: null,
  DescribeTopic: topicName,
  TopicInfo: topicInfo,
  TopicList: struct([["topics", vec(topicInfo)]]),
  ListGroups: topicName,
  GroupList: struct([["groups", vec(groupInfo)]]),
  ResetGroup: struct([["topic", string], ["group", string], ["to", start]]),
  RepairTopic: struct([["name", string], ["dry_run", bool]]),
  RepairReport: struct([
    ["topic", string],
    ["dry_run", bool],
    [
      "ranges",
      vec(
        struct([
          ["segment", string],
          ["position", u64],
          ["bytes", u64],
          ["first_offset", u64],
          ["end_offset", u64],
          ["reason", string],
        ]),
      ),
    ],
    ["records", u64],
    ["bytes", u64],
  ]),
  Join: struct([["room", string], ["durable", bool], ["history", u32]]),
  Leave: roomName,
  Emit: emit,
  EmitOk: emitOk,
  Members: roomName,
  MemberList: struct([["members", vec(struct([["client_id", string], ["online", bool]]))]]),
  Reply: struct([["to_client", string], ["correlation", u64], ["payload", bytes]]),
  Skipped: struct([["subscription_id", u64], ["first", u64], ["last", u64]]),
  MyRooms: null,
  RoomList: struct([["rooms", vec(struct([["room", string], ["durable", bool]]))]]),
  // Version 3; this client speaks version 1 and sends its emits one by one.
  EmitBatch: struct([["emits", vec(emit)]]),
  EmitBatchOk: struct([["results", vec(emitOutcome)]]),
  Refresh: struct([["token", string]]),
  TokenExpiring: struct([["expires_in_ms", u64]]),
  // Between cluster nodes: the broker's own bytes, carried as they are.
  Cluster: "opaque",
  ClusterReply: "opaque",
  ClusterStatus: null,
  ClusterInfo: struct([
    ["node_id", u64],
    ["nodes", vec(struct([["id", u64], ["addr", string]]))],
    [
      "groups",
      vec(
        struct([
          ["name", string],
          ["leader", option(u64)],
          ["term", u64],
          ["last_index", option(u64)],
          ["applied", option(u64)],
          ["replicas", vec(struct([["node", u64], ["matched", option(u64)]]))],
        ]),
      ),
    ],
  ]),
  ClusterChange: enumeration([
    ["AddNode", struct([["id", u64], ["addr", string]])],
    ["RemoveNode", struct([["id", u64]])],
    ["MoveTopic", struct([["topic", string], ["replicas", vec(u64)]])],
  ]),
};

/** Pushed by the broker, unprompted. */
const PUSHED = new Set(["GoingAway", "Deliver", "SubscriptionError", "Skipped", "TokenExpiring"]);

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function encodeBody(op, body) {
  const t = BODIES[op];
  if (t === undefined) throw protocolError(`unknown message ${op}`);
  if (t === null) return new Uint8Array(0);
  const w = new pc.Writer();
  if (op === "Publish") {
    const topic = utf8.encode(body.topic);
    if (topic.length > 0xffff) throw protocolError("topic name over 65535 bytes");
    w.u8(topic.length & 0xff);
    w.u8(topic.length >> 8);
    w.bytes(topic);
    w.bytes(body.batch);
  } else if (t === "opaque") {
    w.bytes(body);
  } else if (op === "Deliver") {
    const h = new Uint8Array(28);
    const dv = new DataView(h.buffer);
    dv.setBigUint64(0, BigInt(body.subscription_id), true);
    dv.setBigUint64(8, BigInt(body.first_offset), true);
    dv.setBigUint64(16, BigInt(body.last_offset), true);
    dv.setUint32(24, body.delivery_count, true);
    w.bytes(h);
    w.bytes(body.batch);
  } else {
    t.enc(w, body);
  }
  return w.finish();
}

/**
 * Encodes one frame.
 * @param {string} op opcode name
 * @param {number} requestId
 * @param {object|null} body in the shape of BODIES[op]
 */
export function encodeFrame(op, requestId, body = null) {
  const b = encodeBody(op, body);
  const f = new Uint8Array(HEADER_LEN + b.length);
  const dv = new DataView(f.buffer);
  dv.setUint32(0, 12 + b.length, true);
  f[4] = OP[op];
  f[5] = PUSHED.has(op) ? FLAG_PUSH : 0;
  dv.setBigUint64(8, BigInt(requestId), true);
  f.set(b, HEADER_LEN);
  return f;
}

/** A frame with a new request id (re-sending a request after a reconnect). */
export function withRequestId(frame, requestId) {
  const f = frame.slice();
  new DataView(f.buffer).setBigUint64(8, BigInt(requestId), true);
  return f;
}

function decodeRaw(op, body) {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (op === "Publish") {
    if (body.length < 2) throw protocolError("publish body under 2 bytes");
    const tl = dv.getUint16(0, true);
    if (body.length < 2 + tl) throw protocolError("publish topic past the body");
    let topic;
    try {
      topic = strictUtf8.decode(body.subarray(2, 2 + tl));
    } catch {
      throw protocolError("topic is not UTF-8");
    }
    const batch = body.subarray(2 + tl);
    parseBatch(batch);
    return { topic, batch };
  }
  if (body.length < 28) throw protocolError("deliver body under 28 bytes");
  const big = (at) => {
    const high = dv.getUint32(at + 4, true);
    if (high >= 0x200000) throw protocolError(`u64 ${dv.getBigUint64(at, true)} beyond 2^53`);
    return high * 0x100000000 + dv.getUint32(at, true);
  };
  const d = {
    subscription_id: big(0),
    first_offset: big(8),
    last_offset: big(16),
    delivery_count: dv.getUint32(24, true),
    batch: body.subarray(28),
  };
  const parsed = parseBatch(d.batch);
  const last = parsed.baseOffset + parsed.count - 1;
  if (d.first_offset > d.last_offset || d.first_offset < parsed.baseOffset || d.last_offset > last) {
    throw protocolError(`deliver range ${d.first_offset}..=${d.last_offset} outside its batch`);
  }
  d.parsed = parsed;
  return d;
}

/**
 * Decodes a frame's body: { op, requestId, flags, body }. Throws a
 * Protocol HeraldError for anything docs/protocol.md says to refuse.
 */
export function decodeMessage(frame) {
  const { op, body } = frame;
  const t = BODIES[op];
  let value;
  if (t === null) {
    if (body.length !== 0) throw protocolError(`${op} must have an empty body`);
    value = null;
  } else if (t === "raw") {
    value = decodeRaw(op, body);
  } else if (t === "opaque") {
    value = body;
  } else {
    const r = new pc.Reader(body);
    value = t.dec(r);
    r.end(op);
  }
  return { op, requestId: frame.requestId, flags: frame.flags, body: value };
}

/**
 * Splits a byte stream into frames. The length prefix is checked against
 * the limit as soon as its 4 bytes are there, before anything is kept for
 * the frame.
 */
export class FrameDecoder {
  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Adds received bytes. */
  push(bytes) {
    if (bytes.length > 0) {
      this.chunks.push(bytes);
      this.buffered += bytes.length;
    }
  }

  /** Joins the first `n` buffered bytes into one array (without consuming). */
  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const out = new Uint8Array(this.buffered);
    let p = 0;
    for (const c of this.chunks) {
      out.set(c, p);
      p += c.length;
    }
    this.chunks = [out];
    return out;
  }

  /** The next whole frame, or null until more bytes arrive. */
  next() {
    if (this.buffered < 4) return null;
    const head = this.peek(4);
    const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
    if (length < 12) throw protocolError(`frame length ${length} below 12`);
    if (length + 4 > this.maxFrame) throw protocolError(`frame of ${length + 4} bytes over the ${this.maxFrame} limit`);
    const total = length + 4;
    if (this.buffered < total) return null;
    const all = this.peek(total);
    const dv = new DataView(all.buffer, all.byteOffset, HEADER_LEN);
    const code = all[4];
    const op = opName(code);
    if (op === undefined) throw protocolError(`unknown opcode 0x${code.toString(16)}`);
    const flags = all[5];
    if ((flags & ~FLAG_PUSH) !== 0) throw protocolError(`flags 0x${flags.toString(16)}`);
    if (dv.getUint16(6, true) !== 0) throw protocolError("reserved header field not 0");
    const idHigh = dv.getUint32(12, true);
    // The body is a view of the received bytes, never a copy: a copy per
    // frame (allocation, zeroing, its collection) was a tenth of the
    // receive path. So a payload the application keeps holds the
    // WebSocket message it came in (docs/web.md says to copy what is kept
    // long).
    const frame = {
      op,
      flags,
      requestId: idHigh < 0x200000 ? idHigh * 0x100000000 + dv.getUint32(8, true) : dv.getBigUint64(8, true),
      body: all.subarray(HEADER_LEN, total),
    };
    const rest = all.subarray(total);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= total;
    return frame;
  }
}

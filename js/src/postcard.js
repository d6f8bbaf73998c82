// Postcard 1.x, as Herald's control bodies use it (docs/protocol.md
// section 2): LEB128 varints, zigzag for signed integers, length-prefixed
// strings and sequences, enums as a varint variant index. Integers are
// JavaScript numbers; a u64 above 2^53 cannot be one exactly and is
// refused rather than rounded (readU64Big gives it as a BigInt).

import { protocolError } from "./errors.js";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Grows as bytes are written. */
export class Writer {
  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  u8(v) {
    this.reserve(1);
    this.buf[this.len++] = v;
  }

  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** Unsigned varint of a non-negative safe integer or a BigInt. */
  varint(v) {
    let n = BigInt(v);
    if (n < 0n) throw protocolError(`negative value ${v} for an unsigned field`);
    do {
      let byte = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) byte |= 0x80;
      this.u8(byte);
    } while (n > 0n);
  }

  /** Zigzag varint of a signed integer (i64). */
  zigzag(v) {
    const n = BigInt.asIntN(64, BigInt(v));
    this.varint(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)));
  }

  bool(v) {
    this.u8(v ? 1 : 0);
  }

  f64(v) {
    this.reserve(8);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 8).setFloat64(0, v, true);
    this.len += 8;
  }

  string(s) {
    const b = utf8.encode(s);
    this.varint(b.length);
    this.bytes(b);
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

/** Reads from a byte array; every read checks the bytes are there. */
export class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.pos = 0;
  }

  need(n, what) {
    if (this.pos + n > this.b.length) {
      throw protocolError(`${what}: need ${n} bytes at ${this.pos}, have ${this.b.length - this.pos}`);
    }
  }

  u8() {
    this.need(1, "u8");
    return this.b[this.pos++];
  }

  bytes(n) {
    this.need(n, "bytes");
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A varint of at most `bits` bits, as a BigInt. */
  varintBig(bits) {
    const maxBytes = Math.ceil(bits / 7);
    let n = 0n;
    for (let i = 0; i < maxBytes; i++) {
      const byte = this.u8();
      if (i === maxBytes - 1 && byte >= 1 << (bits - 7 * i)) {
        throw protocolError(`varint over ${bits} bits`);
      }
      n |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if ((byte & 0x80) === 0) return n;
    }
    throw protocolError(`varint over ${bits} bits`);
  }

  u16() {
    return Number(this.varintBig(16));
  }

  u32() {
    return Number(this.varintBig(32));
  }

  u64() {
    return this.checkedU64(this.varintBig(64));
  }

  /** `n` as a number, if a JavaScript number holds it exactly. */
  checkedU64(n) {
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw protocolError(`u64 ${n} is beyond what a JavaScript number holds exactly`);
    }
    return Number(n);
  }

  u64Big() {
    return this.varintBig(64);
  }

  i64() {
    const z = this.varintBig(64);
    const n = BigInt.asIntN(64, (z >> 1n) ^ -(z & 1n));
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw protocolError(`i64 ${n} is beyond what a JavaScript number holds exactly`);
    }
    return Number(n);
  }

  bool() {
    const b = this.u8();
    if (b > 1) throw protocolError(`bool byte ${b}`);
    return b === 1;
  }

  f64() {
    const b = this.bytes(8);
    return new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, true);
  }

  string() {
    const n = this.u64();
    try {
      return strictUtf8.decode(this.bytes(n));
    } catch (e) {
      if (e.name === "HeraldError") throw e;
      throw protocolError("a string that is not UTF-8");
    }
  }

  /** The body must be consumed exactly. */
  end(what) {
    if (this.pos !== this.b.length) {
      throw protocolError(`${what}: ${this.b.length - this.pos} bytes after the last field`);
    }
  }
}

// Type combinators: each has enc(writer, value) and dec(reader). Values
// have the shape serde_json gives the Rust types (structs are objects with
// the fields by name; unit variants are strings; other variants are
// { Variant: fields }), so the shared vectors apply directly.

export const u8 = { enc: (w, v) => w.u8(v), dec: (r) => r.u8() };
export const u16 = { enc: (w, v) => w.varint(v), dec: (r) => r.u16() };
export const u32 = { enc: (w, v) => w.varint(v), dec: (r) => r.u32() };
export const u64 = { enc: (w, v) => w.varint(v), dec: (r) => r.u64() };
/** The u64 all ones (2^64 - 1): the broker's "offset unknown". */
const UNKNOWN = (1n << 64n) - 1n;
/** An offset the broker may not know (a duplicate publish older than the
 * batches it remembers per producer comes back with 2^64 - 1): `null`
 * then, instead of a number JavaScript cannot hold, which would end the
 * connection and, re-sent after the reconnect, end it again. */
export const offsetOrUnknown = {
  enc: (w, v) => (v === null ? w.varint(UNKNOWN) : w.varint(v)),
  dec: (r) => {
    const n = r.varintBig(64);
    return n === UNKNOWN ? null : r.checkedU64(n);
  },
};
export const i64 = { enc: (w, v) => w.zigzag(v), dec: (r) => r.i64() };
export const bool = { enc: (w, v) => w.bool(v), dec: (r) => r.bool() };
export const f64 = { enc: (w, v) => w.f64(v), dec: (r) => r.f64() };
export const string = { enc: (w, v) => w.string(v), dec: (r) => r.string() };

/** Vec<u8>: a varint length, then the bytes (a Uint8Array). */
export const bytes = {
  enc: (w, v) => {
    w.varint(v.length);
    w.bytes(v);
  },
  dec: (r) => r.bytes(r.u64()).slice(),
};

export const option = (t) => ({
  enc: (w, v) => {
    if (v === null || v === undefined) return w.u8(0);
    w.u8(1);
    t.enc(w, v);
  },
  dec: (r) => {
    const tag = r.u8();
    if (tag === 0) return null;
    if (tag === 1) return t.dec(r);
    throw protocolError(`option tag ${tag}`);
  },
});

export const vec = (t) => ({
  enc: (w, v) => {
    w.varint(v.length);
    for (const x of v) t.enc(w, x);
  },
  dec: (r) => {
    const n = r.u64();
    // Each element takes at least one byte: a count beyond the bytes left
    // is refused before anything is allocated for it.
    r.need(Math.min(n, r.b.length + 1), "sequence");
    const out = [];
    for (let i = 0; i < n; i++) out.push(t.dec(r));
    return out;
  },
});

export const tuple = (...ts) => ({
  enc: (w, v) => ts.forEach((t, i) => t.enc(w, v[i])),
  dec: (r) => ts.map((t) => t.dec(r)),
});

/** A struct: its fields in declaration order, no names on the wire. A
 * field a later protocol version appended ({@link trailing}) is left out
 * of the object when absent. */
export const struct = (fields) => ({
  enc: (w, v) => {
    for (const [name, t] of fields) t.enc(w, v[name]);
  },
  dec: (r) => {
    const o = {};
    for (const [name, t] of fields) {
      const x = t.dec(r);
      if (x !== undefined) o[name] = x;
    }
    return o;
  },
});

/** A last field that only a later protocol version sends (HelloOk's
 * `ack_timeout_ms`, version 2): nothing on the wire when absent
 * (undefined or null), read only if bytes are left. */
export const trailing = (t) => ({
  enc: (w, v) => {
    if (v !== null && v !== undefined) t.enc(w, v);
  },
  dec: (r) => (r.pos === r.b.length ? undefined : t.dec(r)),
});

/**
 * An enum: `variants` in declaration order, each [name, type] where type
 * is null for a unit variant (encoded as the string `name`).
 */
export const enumeration = (variants) => ({
  enc: (w, v) => {
    const name = typeof v === "string" ? v : Object.keys(v)[0];
    const i = variants.findIndex(([n]) => n === name);
    if (i < 0) throw protocolError(`unknown variant ${name}`);
    w.varint(i);
    const t = variants[i][1];
    if (t) t.enc(w, v[name]);
  },
  dec: (r) => {
    const i = r.u32();
    if (i >= variants.length) throw protocolError(`variant index ${i} out of range`);
    const [name, t] = variants[i];
    return t ? { [name]: t.dec(r) } : name;
  },
});

// Record batches (docs/protocol.md section 7): the fixed little-endian
// layout that is published, stored and delivered byte for byte, with its
// CRC-32C. buildBatch makes one for a producer; parseBatch checks one
// (every rule the broker checks) and reads its records.

import { protocolError } from "./errors.js";

export const BATCH_HEADER = 56;
export const MAX_RECORDS = 1048576;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

const CRC_TABLE = (() => {
  // Castagnoli polynomial 0x1EDC6F41, reflected: 0x82F63B78.
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `bytes` (the iSCSI / ext4 CRC). */
export function crc32c(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Bytes of a payload, key or header value given as text or bytes. */
export function toBytes(v) {
  if (v === null || v === undefined) return new Uint8Array(0);
  if (typeof v === "string") return utf8.encode(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw protocolError(`cannot send a ${typeof v} as bytes: give a string, a Uint8Array or an ArrayBuffer`);
}

/**
 * Builds a batch. Each record is { payload, key?, headers?, timestamp? }
 * (headers: [name, value] pairs or an object). The broker stamps the base
 * offset and append time; both are written 0.
 * @param {Array<object>} records
 * @param {bigint} producerId 0n for a producer that is not idempotent
 * @param {number|bigint} baseSequence sequence number of the first record
 */
export function buildBatch(records, producerId = 0n, baseSequence = 0) {
  if (records.length < 1 || records.length > MAX_RECORDS) {
    throw protocolError(`a batch holds 1 to ${MAX_RECORDS} records, not ${records.length}`);
  }
  const enc = records.map((r) => {
    const key = toBytes(r.key);
    const hs = Array.isArray(r.headers) ? r.headers : Object.entries(r.headers ?? {});
    const headers = hs.map(([n, v]) => [utf8.encode(n), toBytes(v)]);
    const payload = toBytes(r.payload);
    const hlen = headers.reduce((s, [n, v]) => s + 6 + n.length + v.length, 0);
    return { key, headers, payload, ts: r.timestamp ?? Date.now(), len: 14 + key.length + hlen + payload.length };
  });
  const total = BATCH_HEADER + enc.reduce((s, r) => s + 4 + r.len, 0);
  const b = new Uint8Array(total);
  const dv = new DataView(b.buffer);
  const firstTs = enc[0].ts;
  dv.setUint32(16, total, true);
  b[24] = 1; // magic
  dv.setUint32(28, enc.length, true);
  dv.setBigInt64(32, BigInt(firstTs), true);
  dv.setBigUint64(40, BigInt.asUintN(64, BigInt(producerId)), true);
  dv.setBigUint64(48, BigInt.asUintN(64, BigInt(baseSequence)), true);
  let p = BATCH_HEADER;
  enc.forEach((r, i) => {
    dv.setUint32(p, r.len, true);
    dv.setUint32(p + 4, i, true);
    const delta = Math.max(-2147483648, Math.min(2147483647, r.ts - firstTs));
    dv.setInt32(p + 8, delta, true);
    dv.setUint32(p + 12, r.key.length, true);
    p += 16;
    b.set(r.key, p);
    p += r.key.length;
    dv.setUint16(p, r.headers.length, true);
    p += 2;
    for (const [n, v] of r.headers) {
      dv.setUint16(p, n.length, true);
      b.set(n, p + 2);
      p += 2 + n.length;
      dv.setUint32(p, v.length, true);
      b.set(v, p + 4);
      p += 4 + v.length;
    }
    b.set(r.payload, p);
    p += r.payload.length;
  });
  dv.setUint32(20, crc32c(b.subarray(24)), true);
  return b;
}

function safe(big, what) {
  if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw protocolError(`${what} ${big} is beyond what a JavaScript number holds exactly`);
  }
  return Number(big);
}

/**
 * Checks a batch as docs/protocol.md section 7 says, in that order, and
 * returns its header fields and records. Throws on the first rule broken.
 * Records: { offset, timestamp, key (Uint8Array or null), headers
 * ([name, Uint8Array] pairs), payload (Uint8Array) }, slices of `b`.
 */
export function parseBatch(b) {
  if (b.length < BATCH_HEADER) throw protocolError(`batch of ${b.length} bytes, below the 56-byte header`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = dv.getUint32(16, true);
  if (len !== b.length) throw protocolError(`batch_len ${len} but ${b.length} bytes present`);
  if (b[24] !== 1) throw protocolError(`batch magic ${b[24]}`);
  if (b[25] !== 0 || dv.getUint16(26, true) !== 0) throw protocolError("batch attributes or reserved not 0");
  const crc = dv.getUint32(20, true);
  if (crc32c(b.subarray(24)) !== crc) throw protocolError("batch CRC mismatch");
  const count = dv.getUint32(28, true);
  if (count < 1 || count > MAX_RECORDS) throw protocolError(`record_count ${count}`);
  const baseOffset = safe(dv.getBigUint64(0, true), "base_offset");
  const appendTime = safe(dv.getBigInt64(8, true), "append_time");
  const firstTs = safe(dv.getBigInt64(32, true), "first_timestamp");
  const records = [];
  let p = BATCH_HEADER;
  for (let i = 0; i < count; i++) {
    if (p + 4 > len) throw protocolError(`record ${i}: length field past the batch`);
    const rlen = dv.getUint32(p, true);
    const end = p + 4 + rlen;
    if (rlen < 14 || end > len) throw protocolError(`record ${i}: length ${rlen}`);
    if (dv.getUint32(p + 4, true) !== i) throw protocolError(`record ${i}: offset_delta`);
    const tsDelta = dv.getInt32(p + 8, true);
    const klen = dv.getUint32(p + 12, true);
    let q = p + 16;
    if (q + klen + 2 > end) throw protocolError(`record ${i}: key past the record`);
    const key = klen > 0 ? b.subarray(q, q + klen) : null;
    q += klen;
    const hcount = dv.getUint16(q, true);
    q += 2;
    const headers = [];
    for (let h = 0; h < hcount; h++) {
      if (q + 2 > end) throw protocolError(`record ${i}: header past the record`);
      const nlen = dv.getUint16(q, true);
      if (q + 2 + nlen + 4 > end) throw protocolError(`record ${i}: header past the record`);
      let name;
      try {
        name = strictUtf8.decode(b.subarray(q + 2, q + 2 + nlen));
      } catch {
        throw protocolError(`record ${i}: header name is not UTF-8`);
      }
      q += 2 + nlen;
      const vlen = dv.getUint32(q, true);
      if (q + 4 + vlen > end) throw protocolError(`record ${i}: header past the record`);
      headers.push([name, b.subarray(q + 4, q + 4 + vlen)]);
      q += 4 + vlen;
    }
    records.push({
      offset: baseOffset + i,
      timestamp: firstTs + tsDelta,
      key,
      headers,
      payload: b.subarray(q, end),
    });
    p = end;
  }
  if (p !== len) throw protocolError("records end before batch_len");
  return { baseOffset, appendTime, count, producerId: dv.getBigUint64(40, true), baseSequence: dv.getBigUint64(48, true), records };
}

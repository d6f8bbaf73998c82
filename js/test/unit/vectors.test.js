// The byte-level vectors shared with the Rust crate
// (protocol/tests/vectors.json): the same bytes, both ways.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { encodeFrame, decodeMessage, FrameDecoder, OP, DEFAULT_MAX_FRAME } from "../../src/codec.js";
import { buildBatch, parseBatch, crc32c } from "../../src/batch.js";
import { Writer, Reader } from "../../src/postcard.js";

const vectors = JSON.parse(readFileSync(new URL("../../../protocol/tests/vectors.json", import.meta.url), "utf8"));
const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

/** 2^64 - 1 as JSON.parse reads it (rounded): the broker's "offset unknown". */
const UNKNOWN_OFFSET = Number(2n ** 64n - 1n);

/** A vector body in the codec's shape: payloads and batches as bytes, an
 * unknown offset as null. */
function toCodec(op, body) {
  if (body === null) return null;
  if (op === "PublishOk" && body.base_offset === UNKNOWN_OFFSET) return { ...body, base_offset: null };
  if (op === "Publish" || op === "Deliver") return { ...body, batch: unhex(body.batch) };
  if (op === "Emit" || op === "Reply") return { ...body, payload: new Uint8Array(body.payload) };
  if (op === "EmitBatch") return { emits: body.emits.map((e) => toCodec("Emit", e)) };
  if (op === "Cluster" || op === "ClusterReply") return unhex(body.hex);
  return body;
}

/** A decoded body in the vectors' shape. */
function toVector(op, body) {
  if (body === null) return null;
  if (op === "PublishOk" && body.base_offset === null) return { ...body, base_offset: UNKNOWN_OFFSET };
  if (op === "Publish") return { topic: body.topic, batch: hex(body.batch) };
  if (op === "Deliver") {
    const { parsed, ...rest } = body;
    assert.ok(parsed.records.length > 0);
    return { ...rest, batch: hex(body.batch) };
  }
  if (op === "Emit" || op === "Reply") return { ...body, payload: Array.from(body.payload) };
  if (op === "EmitBatch") return { emits: body.emits.map((e) => toVector("Emit", e)) };
  if (op === "Cluster" || op === "ClusterReply") return { hex: hex(body) };
  return body;
}

function decodeOne(bytes) {
  const d = new FrameDecoder(DEFAULT_MAX_FRAME);
  d.push(bytes);
  const f = d.next();
  assert.ok(f, "one whole frame");
  assert.equal(d.buffered, 0);
  return decodeMessage(f);
}

test("every frame vector encodes to its bytes and decodes back", () => {
  for (const v of vectors.frames) {
    const bytes = encodeFrame(v.opcode, v.request_id, toCodec(v.opcode, v.body));
    assert.equal(hex(bytes), v.hex, `encoding of ${v.name}`);
    const m = decodeOne(unhex(v.hex));
    assert.equal(m.op, v.opcode, v.name);
    assert.equal(m.requestId, v.request_id, v.name);
    assert.deepEqual(toVector(v.opcode, m.body), v.body, `decoding of ${v.name}`);
  }
});

test("every opcode the client knows has a vector, and the other way round", () => {
  const have = new Set(vectors.frames.map((v) => v.opcode));
  assert.deepEqual([...have].sort(), Object.keys(OP).sort());
});

test("every invalid frame is refused", () => {
  for (const v of vectors.invalid) {
    assert.throws(() => decodeOne(unhex(v.hex)), { name: "HeraldError" }, v.name);
  }
});

test("frames split anywhere, or several in one chunk, decode the same", () => {
  const all = vectors.frames.map((v) => unhex(v.hex));
  const joined = new Uint8Array(all.reduce((s, b) => s + b.length, 0));
  let p = 0;
  for (const b of all) {
    joined.set(b, p);
    p += b.length;
  }
  for (const step of [1, 3, 7, 64, joined.length]) {
    const d = new FrameDecoder();
    const got = [];
    for (let i = 0; i < joined.length; i += step) {
      d.push(joined.subarray(i, i + step));
      for (let f = d.next(); f; f = d.next()) got.push(f.op);
    }
    assert.deepEqual(got, vectors.frames.map((v) => v.opcode), `chunks of ${step}`);
  }
});

test("batches build to their bytes and parse back", () => {
  for (const v of vectors.batches) {
    const built = buildBatch(v.records, BigInt(v.producer_id), BigInt(v.base_sequence));
    assert.equal(hex(built), v.hex, v.name);
    const parsed = parseBatch(unhex(v.hex));
    assert.equal(parsed.producerId, BigInt(v.producer_id));
    const dec = new TextDecoder();
    parsed.records.forEach((r, i) => {
      const want = v.records[i];
      assert.equal(r.key === null ? null : dec.decode(r.key), want.key, v.name);
      assert.equal(dec.decode(r.payload), want.payload, v.name);
      assert.equal(r.timestamp, want.timestamp, v.name);
      assert.deepEqual(r.headers.map(([n, x]) => [n, dec.decode(x)]), want.headers, v.name);
    });
  }
});

test("varints, zigzag and CRC-32C", () => {
  for (const [n, h] of vectors.varints) {
    const w = new Writer();
    w.varint(BigInt(n));
    assert.equal(hex(w.finish()), h, `varint ${n}`);
    assert.equal(new Reader(unhex(h)).u64Big(), BigInt(n));
  }
  for (const [n, h] of vectors.zigzag) {
    const w = new Writer();
    w.zigzag(BigInt(n));
    assert.equal(hex(w.finish()), h, `zigzag ${n}`);
  }
  for (const c of vectors.crc32c) {
    assert.equal(crc32c(new TextEncoder().encode(c.ascii)).toString(16).padStart(8, "0"), c.crc);
  }
});

test("a u64 beyond 2^53 is refused, not rounded", () => {
  assert.throws(() => new Reader(unhex("ffffffffffffffffff01")).u64(), /beyond/);
});

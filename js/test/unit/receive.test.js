// The receive path's shortcuts, each against the plain way it replaces:
// the sliced CRC-32C against the byte-at-a-time one, records whose views
// are made when asked for against the batch's bytes, headers that repeat
// the record before's against reading them, the text cache against
// decoding, and frame bodies lent as views of the received bytes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32c, crc32cBytewise, crc32cSliced, crc32cWords, buildBatch, parseBatch } from "../../src/batch.js";
import { TextCache, isUtf8 } from "../../src/text.js";
import { FrameDecoder, encodeFrame, decodeMessage } from "../../src/codec.js";
import { RoomEvent, Rooms } from "../../src/rooms.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

test("CRC-32C: the check value, and sliced equals byte at a time at every length and alignment", () => {
  for (const f of [crc32c, crc32cSliced, crc32cWords, crc32cBytewise]) assert.equal(f(enc.encode("123456789")), 0xe3069283, f.name);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  // iSCSI test vectors (RFC 3720, B.4): 32 bytes of zeros, of ones, ascending.
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  const big = Uint8Array.from({ length: 700 }, rand);
  for (let start = 0; start < 9; start++) {
    for (let len = 0; len < 80; len++) {
      const b = big.subarray(start, start + len);
      const want = crc32cBytewise(b);
      assert.equal(crc32cWords(b), want, `${len} bytes at ${start}`);
      assert.equal(crc32cSliced(b), want, `${len} bytes at ${start}`);
    }
    const b = big.subarray(start);
    assert.equal(crc32cWords(b), crc32cBytewise(b), `${b.length} bytes at ${start}`);
    assert.equal(crc32cSliced(b), crc32cBytewise(b), `${b.length} bytes at ${start}`);
  }
});

test("a parsed record's key, payload and headers are the batch's bytes, made once", () => {
  const records = [
    { key: "k1", payload: "one", headers: [["a", "x"], ["bé", "y"], ["a", "second a"]], timestamp: 5 },
    { payload: "two", headers: [], timestamp: 6 },
  ];
  const b = buildBatch(records);
  const p = parseBatch(b);
  const [r0, r1] = p.records;
  assert.equal(dec.decode(r0.key), "k1");
  assert.equal(r0.key, r0.key, "the same view each time");
  assert.equal(r0.key.buffer, b.buffer, "a view, not a copy");
  assert.equal(dec.decode(r0.payload), "one");
  assert.equal(r0.payload, r0.payload);
  assert.deepEqual(
    r0.headers.map(([n, v]) => [n, dec.decode(v)]),
    [["a", "x"], ["bé", "y"], ["a", "second a"]],
  );
  assert.equal(r0.headers, r0.headers);
  assert.equal(r1.key, null);
  assert.deepEqual(r1.headers, []);
  assert.equal(dec.decode(r1.payload), "two");
  const seen = [];
  r0.scanHeaders({
    header: (bytes, nameAt, nameLen, valueAt, valueLen) =>
      seen.push([dec.decode(bytes.subarray(nameAt, nameAt + nameLen)), dec.decode(bytes.subarray(valueAt, valueAt + valueLen))]),
  });
  assert.deepEqual(seen, [["a", "x"], ["bé", "y"], ["a", "second a"]]);
});

test("headers that repeat the record before's are taken from it, any other read anew", () => {
  const h = (sender, extra = []) => [["herald-kind", "event"], ["herald-sender", sender], ["herald-room", "lobby"], ...extra];
  const records = [
    { key: "chat", headers: h("ann"), payload: "0", timestamp: 1 },
    { key: "chat", headers: h("ann"), payload: "1", timestamp: 1 },
    { key: "typing", headers: h("ann"), payload: "two", timestamp: 2 },
    { key: "chat", headers: h("bob"), payload: "3", timestamp: 2 },
    { key: "chat", headers: h("ann"), payload: "4", timestamp: 3 },
    { key: "chat", headers: h("ann", [["herald-except-sender", "1"]]), payload: "5", timestamp: 3 },
    { key: "chat", headers: h("ann", [["herald-except-sender", "1"]]), payload: "6", timestamp: 3 },
    { key: "chat", headers: [], payload: "7", timestamp: 4 },
    { key: "chat", headers: [], payload: "8", timestamp: 4 },
    { key: "chat", headers: h("ann"), payload: "9", timestamp: 5 },
  ];
  const p = parseBatch(buildBatch(records));
  // Taken from the record before: 1, 2 (another key, the same headers),
  // 6; 4 repeats 0 but follows 3, so it is read.
  assert.deepEqual(
    p.records.map((r) => r._sameHeadersAs >= 0),
    [false, true, true, false, false, false, true, false, false, false],
  );
  const rooms = new Rooms({ clientId: "me", _emit() {} });
  const sub = { topic: "_room.lobby" };
  p.records.forEach((r, i) => {
    const want = records[i];
    assert.deepEqual(
      r.headers.map(([n, v]) => [n, dec.decode(v)]),
      want.headers,
      `record ${i}`,
    );
    const ev = new RoomEvent(rooms, sub, r, 1);
    const sender = want.headers.find(([n]) => n === "herald-sender")?.[1] ?? "";
    assert.equal(ev.name, want.key, `record ${i}`);
    assert.equal(ev.sender, sender, `record ${i}`);
    assert.equal(ev.room, "lobby", `record ${i}`);
    assert.equal(ev.kind, "event", `record ${i}`);
    assert.equal(ev.exceptSender, want.headers.length === 4, `record ${i}`);
    assert.equal(ev.text(), want.payload, `record ${i}`);
  });
  // Events read out of order, or from another batch in between, are right.
  const q = parseBatch(buildBatch([{ key: "x", headers: h("cy"), payload: "", timestamp: 1 }]));
  assert.equal(new RoomEvent(rooms, sub, p.records[3], 1).sender, "bob");
  assert.equal(new RoomEvent(rooms, sub, q.records[0], 1).sender, "cy");
  assert.equal(new RoomEvent(rooms, sub, p.records[1], 1).sender, "ann");
});

test("headers that would repeat the record before's only past their record's end are checked, and refused", () => {
  // Three records with the same header; the second's length is cut by one
  // byte, so its header's value runs past its end (into the third).
  const b = buildBatch([0, 1, 2].map((i) => ({ headers: [["n", "vv"]], payload: "", timestamp: i })));
  const second = 56 + 4 + 23;
  assert.equal(new DataView(b.buffer).getUint32(second, true), 23);
  new DataView(b.buffer).setUint32(second, 22, true);
  new DataView(b.buffer).setUint32(20, crc32c(b.subarray(24)), true);
  assert.throws(() => parseBatch(b), /record 1: header past the record/);
});

test("a header name that is not UTF-8 is refused; ASCII and multibyte names are not", () => {
  assert.equal(isUtf8(enc.encode("herald-kind"), 0, 11), true);
  assert.equal(isUtf8(enc.encode("xé"), 0, 3), true);
  assert.equal(isUtf8(Uint8Array.of(0x61, 0xc3), 0, 2), false);
  assert.equal(isUtf8(Uint8Array.of(0xff, 0x61), 1, 1), true, "only the range is checked");
  // A batch whose header name byte is 0xff (CRC recomputed so that only
  // the name is wrong).
  const b = buildBatch([{ payload: "p", headers: [["n", "v"]], timestamp: 1 }]);
  const at = b.indexOf(0x6e, 56); // the name "n"
  b[at] = 0xff;
  new DataView(b.buffer).setUint32(20, crc32c(b.subarray(24)), true);
  assert.throws(() => parseBatch(b), /header name is not UTF-8/);
});

test("the text cache gives the decoded text of the bytes it is shown, reused only for the same bytes", () => {
  const c = new TextCache(8);
  const get = (s) => {
    const b = enc.encode(`..${s}..`);
    return c.get(b, 2, b.length - 4);
  };
  for (const s of ["alice", "alice", "alicf", "bob", "", "", "alice", "a much longer value", "a much longer value", "é", "bob"]) {
    assert.equal(get(s), s);
  }
  // Invalid UTF-8 is replaced, as TextDecoder does, and not confused with
  // the replacement character's own bytes.
  assert.equal(c.get(Uint8Array.of(0xff), 0, 1), "\ufffd");
  assert.equal(c.get(enc.encode("\ufffd"), 0, 3), "\ufffd");
  assert.equal(c.get(Uint8Array.of(0xff), 0, 1), "\ufffd");
});

test("a frame's body is a view of the received bytes, alone in its buffer or not", () => {
  const batch = buildBatch([{ payload: "hello", timestamp: 1 }]);
  const frame = encodeFrame("Deliver", 0, { subscription_id: 3, first_offset: 0, last_offset: 0, delivery_count: 1, batch });
  const d = new FrameDecoder();
  d.push(frame);
  const f = d.next();
  assert.equal(f.body.buffer, frame.buffer, "no copy");
  const m = decodeMessage(f);
  assert.equal(dec.decode(m.body.parsed.records[0].payload), "hello");
  assert.equal(m.body.subscription_id, 3);

  // Two frames in one message, at an odd place in a bigger buffer (as a
  // Node Buffer from a socket read is): no copy either; a copy per frame
  // was a tenth of the receive path.
  const two = new Uint8Array(frame.length * 2 + 3);
  two.set(frame, 3);
  two.set(frame, 3 + frame.length);
  const d2 = new FrameDecoder();
  d2.push(two.subarray(3));
  const a = d2.next();
  const b = d2.next();
  assert.equal(a.body.buffer, two.buffer, "a view");
  assert.equal(b.body.buffer, two.buffer);
  assert.equal(b.body.byteOffset, 3 + frame.length + 16);
  assert.equal(dec.decode(decodeMessage(a).body.parsed.records[0].payload), "hello");
  assert.equal(dec.decode(decodeMessage(b).body.parsed.records[0].payload), "hello");
  assert.equal(d2.next(), null);
});

test("request ids and deliver offsets up to 2^53 - 1 are numbers; beyond, a BigInt or a refusal", () => {
  const max = Number.MAX_SAFE_INTEGER;
  const d = new FrameDecoder();
  d.push(encodeFrame("Pong", max));
  assert.equal(d.next().requestId, max);
  d.push(encodeFrame("Pong", 2n ** 53n));
  assert.equal(d.next().requestId, 2n ** 53n);
  d.push(encodeFrame("Pong", 2n ** 64n - 1n));
  assert.equal(d.next().requestId, 2n ** 64n - 1n);
  const batch = buildBatch([{ payload: "x", timestamp: 1 }]);
  const at = (first) => {
    const f = encodeFrame("Deliver", 0, { subscription_id: 1, first_offset: first, last_offset: 0, delivery_count: 1, batch });
    const dd = new FrameDecoder();
    dd.push(f);
    return decodeMessage(dd.next());
  };
  assert.throws(() => at(2n ** 53n), /beyond 2\^53/);
  assert.throws(() => at(max), /outside its batch/, "a safe number, checked against the batch");
});

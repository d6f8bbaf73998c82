//! Record batches: the unit that is published, stored and delivered.
//!
//! A batch is not serde: it has a fixed binary layout so the broker can check
//! it, stamp it and write it to its log exactly as received, and later hand
//! the very same bytes to subscribers.
//!
//! # Layout (all integers little-endian)
//! ```text
//! offset size field
//! 0      8    base_offset      stamped by the broker (0 from a producer)
//! 8      8    append_time      stamped by the broker, ms since the Unix epoch
//! 16     4    batch_len        total bytes of the batch, this header included
//! 20     4    crc32c           CRC32C (Castagnoli) of bytes 24..batch_len
//! 24     1    magic            1
//! 25     1    attributes       0 (reserved for compression)
//! 26     2    reserved         0
//! 28     4    record_count     1 ..= 1_048_576
//! 32     8    first_timestamp  producer time of record 0, ms since the epoch
//! 40     8    producer_id      0 = not idempotent
//! 48     8    base_sequence    sequence number of record 0 for this producer
//! 56          records, back to back
//! ```
//! The CRC starts at byte 24, so stamping the first 16 bytes needs no
//! recomputation.
//!
//! Each record:
//! ```text
//! 4    record_len       bytes of the record after this field (>= 14)
//! 4    offset_delta     index of the record in the batch: 0, 1, 2, ...
//! 4    timestamp_delta  i32, ms relative to first_timestamp
//! 4    key_len          0 = no key
//! k    key
//! 2    header_count
//!      per header: 2 name_len, name (UTF-8), 4 value_len, value
//! p    payload          the rest of the record
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::BatchError;

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 56;
/// The only batch format version so far.
pub const BATCH_MAGIC: u8 = 1;
/// Upper bound on records in one batch, so a count field cannot make a reader
/// loop or allocate for long.
pub const MAX_RECORDS_PER_BATCH: u32 = 1 << 20;
/// Fixed bytes of a record after its length field (offset delta, timestamp
/// delta, key length, header count).
pub const RECORD_FIXED_LEN: usize = 14;
/// Where the CRC-covered region starts.
pub const CRC_START: usize = 24;

const OFF_BASE_OFFSET: usize = 0;
const OFF_APPEND_TIME: usize = 8;
const OFF_BATCH_LEN: usize = 16;
const OFF_CRC: usize = 20;
const OFF_MAGIC: usize = 24;
const OFF_COUNT: usize = 28;
const OFF_FIRST_TS: usize = 32;
const OFF_PRODUCER: usize = 40;
const OFF_SEQUENCE: usize = 48;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads the `batch_len` field of a batch that starts at `b[0]`, if the
/// header is there. Used by log scans to step from batch to batch.
pub fn peek_batch_len(b: &[u8]) -> Option<usize> {
    if b.len() < OFF_BATCH_LEN + 4 {
        return None;
    }
    Some(u32_at(b, OFF_BATCH_LEN) as usize)
}

/// Overwrites the two broker-stamped fields in place. The CRC is unaffected.
pub fn stamp(batch: &mut [u8], base_offset: u64, append_time_ms: i64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    batch[OFF_APPEND_TIME..OFF_APPEND_TIME + 8].copy_from_slice(&append_time_ms.to_le_bytes());
}

/// A record to put in a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordRef<'a> {
    pub key: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    pub payload: &'a [u8],
    /// Producer time in ms since the epoch.
    pub timestamp: i64,
}

/// Builds one batch in a reusable buffer. Producers keep one builder and
/// call [`BatchBuilder::finish`] for each batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    first_ts: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::with_capacity(16 * 1024)
    }

    pub fn with_capacity(cap: usize) -> Self {
        let mut b = BatchBuilder {
            buf: BytesMut::with_capacity(cap.max(BATCH_HEADER_LEN)),
            count: 0,
            first_ts: 0,
        };
        b.reset();
        b
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.put_bytes(0, BATCH_HEADER_LEN);
        self.count = 0;
        self.first_ts = 0;
    }

    /// Records added so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Makes room for `additional` more bytes of records in one allocation,
    /// so a batch whose size the caller knows does not grow by doubling
    /// (a copy of everything pushed so far each time).
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Bytes the batch would have if finished now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record adds to a batch.
    pub fn record_size(r: &RecordRef<'_>) -> usize {
        4 + RECORD_FIXED_LEN
            + r.key.len()
            + r.headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>()
            + r.payload.len()
    }

    /// Appends a record.
    ///
    /// # Panics
    /// If more than [`MAX_RECORDS_PER_BATCH`] records, more than 65535
    /// headers, a header name over 65535 bytes, or a record over 4 GiB is
    /// pushed; callers bound batches far below that.
    pub fn push(&mut self, r: &RecordRef<'_>) {
        assert!(self.count < MAX_RECORDS_PER_BATCH, "batch record limit");
        assert!(r.headers.len() <= u16::MAX as usize, "too many headers");
        if self.count == 0 {
            self.first_ts = r.timestamp;
        }
        let len = Self::record_size(r) - 4;
        self.buf.reserve(len + 4);
        self.buf
            .put_u32_le(u32::try_from(len).expect("record too large"));
        self.buf.put_u32_le(self.count);
        let delta = r.timestamp.saturating_sub(self.first_ts);
        self.buf
            .put_i32_le(delta.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        self.buf.put_u32_le(r.key.len() as u32);
        self.buf.put_slice(r.key);
        self.buf.put_u16_le(r.headers.len() as u16);
        for (name, value) in r.headers {
            self.buf
                .put_u16_le(u16::try_from(name.len()).expect("header name too long"));
            self.buf.put_slice(name.as_bytes());
            self.buf.put_u32_le(value.len() as u32);
            self.buf.put_slice(value);
        }
        self.buf.put_slice(r.payload);
        self.count += 1;
    }

    /// Seals the batch: fills the header and the CRC and hands it out,
    /// leaving the builder empty for the next one.
    ///
    /// # Panics
    /// If the batch is empty.
    pub fn finish(&mut self, producer_id: u64, base_sequence: u64) -> Bytes {
        assert!(self.count > 0, "empty batch");
        let len = self.buf.len();
        {
            let b = &mut self.buf[..];
            b[OFF_BATCH_LEN..OFF_BATCH_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
            b[OFF_MAGIC] = BATCH_MAGIC;
            b[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
            b[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&self.first_ts.to_le_bytes());
            b[OFF_PRODUCER..OFF_PRODUCER + 8].copy_from_slice(&producer_id.to_le_bytes());
            b[OFF_SEQUENCE..OFF_SEQUENCE + 8].copy_from_slice(&base_sequence.to_le_bytes());
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        }
        // Hand out the filled part and keep building in the rest of the
        // same allocation: one allocation serves many batches, and once the
        // batches handed out are dropped `reserve` can reclaim it.
        let out = self.buf.split().freeze();
        self.reset();
        out
    }
}

/// One batch holding the records of `batches`, in order: their bytes
/// copied as they are, except each record's `offset_delta` (renumbered 0,
/// 1, 2, ...) and `timestamp_delta` (rebased on the first batch's
/// `first_timestamp`, saturating at the i32 range as
/// [`BatchBuilder::push`] does). Producer id and sequence are 0.
///
/// For a writer of its own records (the broker's room logs and inboxes)
/// that wants fewer, bigger batches: each batch costs its reader a frame, a
/// CRC check and an acknowledgement chunk, whatever its size.
///
/// `None` if `batches` is empty, holds more than [`MAX_RECORDS_PER_BATCH`]
/// records, or has a batch of an idempotent producer (its sequence numbers
/// would be lost).
pub fn concat(batches: &[Batch]) -> Option<Bytes> {
    let first = batches.first()?;
    if batches.iter().any(|b| b.producer_id() != 0) {
        return None;
    }
    let count: u64 = batches.iter().map(|b| u64::from(b.record_count())).sum();
    if count > u64::from(MAX_RECORDS_PER_BATCH) {
        return None;
    }
    let len = BATCH_HEADER_LEN
        + batches
            .iter()
            .map(|b| b.len_bytes() - BATCH_HEADER_LEN)
            .sum::<usize>();
    let first_ts = first.first_timestamp();
    let mut buf = BytesMut::with_capacity(len);
    buf.put_bytes(0, BATCH_HEADER_LEN);
    let mut index = 0u32;
    for b in batches {
        let bytes = &b.bytes()[..];
        let shift = b.first_timestamp().saturating_sub(first_ts);
        let mut pos = BATCH_HEADER_LEN;
        while pos < bytes.len() {
            let rlen = u32_at(bytes, pos) as usize;
            let at = buf.len();
            buf.put_slice(&bytes[pos..pos + 4 + rlen]);
            let ts = (u32_at(bytes, pos + 8) as i32 as i64)
                .saturating_add(shift)
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32;
            buf[at + 4..at + 8].copy_from_slice(&index.to_le_bytes());
            buf[at + 8..at + 12].copy_from_slice(&ts.to_le_bytes());
            index += 1;
            pos += 4 + rlen;
        }
    }
    let b = &mut buf[..];
    b[OFF_BATCH_LEN..OFF_BATCH_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
    b[OFF_MAGIC] = BATCH_MAGIC;
    b[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&index.to_le_bytes());
    b[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&first_ts.to_le_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Some(buf.freeze())
}

/// The fixed header fields of a batch, read without validating it: what
/// the broker's storage scan needs from each header it reads off disk (the
/// CRC and the records are checked separately, and only where needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    pub base_offset: u64,
    pub append_time: i64,
    pub batch_len: u32,
    pub magic: u8,
    pub record_count: u32,
    pub producer_id: u64,
    pub base_sequence: u64,
}

impl HeaderFields {
    /// Reads the first [`BATCH_HEADER_LEN`] bytes of `b`; `None` if `b` is
    /// shorter.
    pub fn parse(b: &[u8]) -> Option<HeaderFields> {
        if b.len() < BATCH_HEADER_LEN {
            return None;
        }
        Some(HeaderFields {
            base_offset: u64_at(b, OFF_BASE_OFFSET),
            append_time: u64_at(b, OFF_APPEND_TIME) as i64,
            batch_len: u32_at(b, OFF_BATCH_LEN),
            magic: b[OFF_MAGIC],
            record_count: u32_at(b, OFF_COUNT),
            producer_id: u64_at(b, OFF_PRODUCER),
            base_sequence: u64_at(b, OFF_SEQUENCE),
        })
    }

    /// One past the last offset in the batch (saturating: the base offset
    /// is outside the CRC).
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// Rewrites the producer id and base sequence of a sealed batch and fixes its
/// CRC. Used when a batch built ahead of time is assigned its sequence.
pub fn set_producer(batch: &mut [u8], producer_id: u64, base_sequence: u64) {
    batch[OFF_PRODUCER..OFF_PRODUCER + 8].copy_from_slice(&producer_id.to_le_bytes());
    batch[OFF_SEQUENCE..OFF_SEQUENCE + 8].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record batch that passed validation. Cheap to clone (it is a `Bytes`).
///
/// # Invariants
/// The bytes are exactly one batch: lengths, magic, CRC and every record's
/// framing were checked, so the accessors and the record iterator never
/// over-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

impl Batch {
    /// Checks `bytes` as one whole batch.
    ///
    /// # Errors
    /// Any framing, length, CRC or record inconsistency, described exactly.
    pub fn validate(bytes: Bytes) -> Result<Batch, BatchError> {
        check(&bytes)?;
        Ok(Batch { bytes })
    }

    /// Wraps bytes that were validated before (read back from our own log,
    /// whose CRC the log checked when it was opened or written).
    pub fn from_trusted(bytes: Bytes) -> Batch {
        Batch { bytes }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> u64 {
        u64_at(&self.bytes, OFF_BASE_OFFSET)
    }
    pub fn append_time(&self) -> i64 {
        u64_at(&self.bytes, OFF_APPEND_TIME) as i64
    }
    pub fn record_count(&self) -> u32 {
        u32_at(&self.bytes, OFF_COUNT)
    }
    /// Offset of the last record.
    ///
    /// Saturates at `u64::MAX`: the base offset lies outside the CRC, and a
    /// hostile or corrupt stamp near the top of the range must not panic.
    pub fn last_offset(&self) -> u64 {
        self.base_offset()
            .saturating_add(u64::from(self.record_count()).saturating_sub(1))
    }
    pub fn first_timestamp(&self) -> i64 {
        u64_at(&self.bytes, OFF_FIRST_TS) as i64
    }
    pub fn producer_id(&self) -> u64 {
        u64_at(&self.bytes, OFF_PRODUCER)
    }
    pub fn base_sequence(&self) -> u64 {
        u64_at(&self.bytes, OFF_SEQUENCE)
    }
    pub fn crc(&self) -> u32 {
        u32_at(&self.bytes, OFF_CRC)
    }

    /// The records, as zero-copy slices of the batch.
    pub fn records(&self) -> Records {
        Records {
            bytes: self.bytes.clone(),
            pos: BATCH_HEADER_LEN,
            base_offset: self.base_offset(),
            first_ts: self.first_timestamp(),
            remaining: self.record_count(),
        }
    }
}

/// Validates a batch in a byte slice; shared by [`Batch::validate`] and log
/// recovery scans.
pub fn check(b: &[u8]) -> Result<(), BatchError> {
    if b.len() < BATCH_HEADER_LEN {
        return Err(BatchError::TooShort {
            len: b.len(),
            min: BATCH_HEADER_LEN,
        });
    }
    let declared = u32_at(b, OFF_BATCH_LEN) as usize;
    if declared != b.len() {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: b.len(),
        });
    }
    if b[OFF_MAGIC] != BATCH_MAGIC {
        return Err(BatchError::BadMagic(b[OFF_MAGIC]));
    }
    let (attributes, reserved) = (b[OFF_MAGIC + 1], u16_at(b, OFF_MAGIC + 2));
    if attributes != 0 || reserved != 0 {
        // Reserved for compression and later versions: a batch that uses
        // them cannot be read correctly by this version.
        return Err(BatchError::Reserved {
            attributes,
            reserved,
        });
    }
    let stored = u32_at(b, OFF_CRC);
    let computed = crc32c::crc32c(&b[CRC_START..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let count = u32_at(b, OFF_COUNT);
    if count == 0 || count > MAX_RECORDS_PER_BATCH {
        return Err(BatchError::BadCount(count));
    }
    let mut pos = BATCH_HEADER_LEN;
    for index in 0..count {
        let bad = |reason| BatchError::Record { index, reason };
        if b.len() - pos < 4 {
            return Err(bad("length field overruns the batch"));
        }
        let len = u32_at(b, pos) as usize;
        pos += 4;
        if len < RECORD_FIXED_LEN || len > b.len() - pos {
            return Err(bad("record length out of bounds"));
        }
        let rec = &b[pos..pos + len];
        if u32_at(rec, 0) != index {
            return Err(bad("offset delta is not the record index"));
        }
        let key_len = u32_at(rec, 8) as usize;
        let mut p = 12;
        if key_len > rec.len() - p - 2 {
            return Err(bad("key overruns the record"));
        }
        p += key_len;
        let hcount = u16_at(rec, p);
        p += 2;
        for _ in 0..hcount {
            if rec.len() - p < 2 {
                return Err(bad("header name length overruns the record"));
            }
            let nl = u16_at(rec, p) as usize;
            p += 2;
            if nl > rec.len() - p {
                return Err(bad("header name overruns the record"));
            }
            // Names are short and nearly always ASCII: the inlined ASCII
            // check spares a call per header of every record (a room
            // member checks hundreds of thousands of records a second).
            let name = &rec[p..p + nl];
            if !name.is_ascii() && std::str::from_utf8(name).is_err() {
                return Err(bad("header name is not UTF-8"));
            }
            p += nl;
            if rec.len() - p < 4 {
                return Err(bad("header value length overruns the record"));
            }
            let vl = u32_at(rec, p) as usize;
            p += 4;
            if vl > rec.len() - p {
                return Err(bad("header value overruns the record"));
            }
            p += vl;
        }
        pos += len;
    }
    if pos != b.len() {
        return Err(BatchError::TrailingRecordBytes {
            end: pos,
            len: b.len(),
        });
    }
    Ok(())
}

/// One record of a batch; every field is a slice of the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Producer time in ms since the epoch.
    pub timestamp: i64,
    pub key: Bytes,
    headers: Bytes,
    header_count: u16,
    pub payload: Bytes,
}

impl Record {
    /// The record's headers as (name, value) pairs, parsed lazily.
    pub fn headers(&self) -> HeaderIter<'_> {
        HeaderIter(self.raw_headers())
    }
    /// The record's headers with their names as bytes (not checked again
    /// as UTF-8: the batch check did) and where each value lies, for
    /// readers that look at every header of every record and keep a few
    /// values ([`Record::header_value`]) without copying them.
    pub fn raw_headers(&self) -> RawHeaders<'_> {
        RawHeaders {
            b: &self.headers,
            pos: 0,
            remaining: self.header_count,
        }
    }
    /// The value at `span`, as reported by [`Record::raw_headers`] for this
    /// record (empty for a span it did not report).
    pub fn header_value(&self, span: HeaderSpan) -> &[u8] {
        let start = span.start as usize;
        self.headers
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }
}

/// Where a header value lies in its record's headers: small enough to keep
/// beside the record instead of a copy of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    pub start: u32,
    pub len: u32,
}

/// One header from [`Record::raw_headers`].
#[derive(Debug, Clone, Copy)]
pub struct RawHeader<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub span: HeaderSpan,
}

/// Iterator over a record's headers, names as bytes.
pub struct RawHeaders<'a> {
    b: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for RawHeaders<'a> {
    type Item = RawHeader<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let b = self.b;
        // In bounds: the batch check validated the layout.
        let nl = u16_at(b, self.pos) as usize;
        self.pos += 2;
        let name = &b[self.pos..self.pos + nl];
        self.pos += nl;
        let vl = u32_at(b, self.pos) as usize;
        self.pos += 4;
        let value = &b[self.pos..self.pos + vl];
        let span = HeaderSpan {
            start: self.pos as u32,
            len: vl as u32,
        };
        self.pos += vl;
        Some(RawHeader { name, value, span })
    }
}

/// Iterator over a record's headers.
pub struct HeaderIter<'a>(RawHeaders<'a>);

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        // Validated: the batch check refused names that are not UTF-8.
        self.0
            .next()
            .map(|h| (std::str::from_utf8(h.name).unwrap_or(""), h.value))
    }
}

/// Iterator over the records of a validated batch.
pub struct Records {
    bytes: Bytes,
    pos: usize,
    base_offset: u64,
    first_ts: i64,
    remaining: u32,
}

impl Iterator for Records {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let b = &self.bytes;
        let len = u32_at(b, self.pos) as usize;
        let start = self.pos + 4;
        let rec = &b[start..start + len];
        let delta = u32_at(rec, 0) as u64;
        let ts_delta = u32_at(rec, 4) as i32 as i64;
        let key_len = u32_at(rec, 8) as usize;
        let key_at = start + 12;
        let hcount = u16_at(b, key_at + key_len);
        let h_at = key_at + key_len + 2;
        let mut p = h_at;
        for _ in 0..hcount {
            let nl = u16_at(b, p) as usize;
            p += 2 + nl;
            let vl = u32_at(b, p) as usize;
            p += 4 + vl;
        }
        self.pos = start + len;
        // Saturating, like `Batch::last_offset`: a stamp or first timestamp
        // at the end of its range is valid framing and must not panic.
        Some(Record {
            offset: self.base_offset.saturating_add(delta),
            timestamp: self.first_ts.saturating_add(ts_delta),
            key: self.bytes.slice(key_at..key_at + key_len),
            headers: self.bytes.slice(h_at..p),
            header_count: hcount,
            payload: self.bytes.slice(p..start + len),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_CRC: u32 = 0xE0E3_3F71;

    fn one(payload: &[u8]) -> Bytes {
        let mut b = BatchBuilder::new();
        b.push(&RecordRef {
            key: b"k",
            headers: &[("h", b"v")],
            payload,
            timestamp: 1000,
        });
        b.finish(7, 3)
    }

    #[test]
    fn pinned_single_record_batch() {
        let bytes = one(b"hi");
        let expected_len = 56 + 4 + 14 + 1 + (2 + 1 + 4 + 1) + 2;
        assert_eq!(bytes.len(), expected_len);
        let mut want = vec![0u8; 16];
        want.extend_from_slice(&(expected_len as u32).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[24..]);
        want.extend_from_slice(&crc.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&1000i64.to_le_bytes());
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&(14u32 + 1 + 8 + 2).to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&0i32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"k");
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(b"h");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"v");
        want.extend_from_slice(b"hi");
        assert_eq!(&bytes[..], &want[..]);
        assert_eq!(crc, PINNED_CRC);
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut m = BytesMut::from(&one(b"payload")[..]);
        stamp(&mut m, 42, 99);
        let b = Batch::validate(m.freeze()).unwrap();
        assert_eq!(b.base_offset(), 42);
        assert_eq!(b.append_time(), 99);
        let r: Vec<_> = b.records().collect();
        assert_eq!(r[0].offset, 42);
        assert_eq!(&r[0].payload[..], b"payload");
        assert_eq!(r[0].headers().collect::<Vec<_>>(), vec![("h", &b"v"[..])]);
    }

    #[test]
    fn reserved_fields_are_rejected_even_with_a_valid_crc() {
        for at in [25usize, 26, 27] {
            let mut m = one(b"x").to_vec();
            m[at] = 1;
            let crc = crc32c::crc32c(&m[CRC_START..]);
            m[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(check(&m), Err(BatchError::Reserved { .. })),
                "byte {at}"
            );
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let bytes = one(b"some payload");
        for cut in 0..bytes.len() {
            assert!(check(&bytes[..cut]).is_err(), "cut {cut}");
        }
        for i in CRC_START..bytes.len() {
            let mut m = bytes.to_vec();
            m[i] ^= 0x10;
            assert!(check(&m).is_err(), "flip {i}");
        }
    }

    /// Header names must be UTF-8 (the ASCII fast path must not let others
    /// through); non-ASCII UTF-8 is fine.
    #[test]
    fn header_names_that_are_not_utf8_are_rejected() {
        let batch = |name: &str| {
            let mut b = BatchBuilder::new();
            b.push(&RecordRef {
                key: b"",
                headers: &[(name, b"v")],
                payload: b"p",
                timestamp: 1,
            });
            b.finish(1, 0).to_vec()
        };
        assert!(check(&batch("h\u{e9}")).is_ok());
        // The same length, its second byte no longer UTF-8, CRC made valid.
        let mut m = batch("h\u{e9}");
        let at = m
            .windows(3)
            .position(|w| w == "h\u{e9}".as_bytes())
            .expect("the name");
        m[at + 1] = 0xff;
        let crc = crc32c::crc32c(&m[CRC_START..]);
        m[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(
            matches!(
                check(&m),
                Err(BatchError::Record {
                    reason: "header name is not UTF-8",
                    ..
                })
            ),
            "{:?}",
            check(&m)
        );
    }
}

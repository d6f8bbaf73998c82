//! Walking the batches of one segment: the checks each batch gets, and what
//! happens past a bad one. Recovery and repair share it.
//!
//! A bad batch starts a damaged range. The walk then looks for the next
//! valid batch after it ([`find_next_batch`]): whole, CRC-correct, at or
//! after the expected offset, and with no more offsets skipped than bytes.
//! If one is found the range ends there and the walk goes on; nothing after
//! the damage is dropped. If none is found the damage runs to the end of the
//! segment: in the active segment at open that is a torn tail (the caller
//! truncates it), anywhere else a damaged range ending at the segment's end.
//!
//! The search can be fooled only by a payload that itself holds a valid
//! stored batch, and only inside a segment that is already damaged.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use herald_protocol::batch::{check, BATCH_HEADER_LEN, BATCH_MAGIC, MAX_RECORDS_PER_BATCH};

use super::damage::{Damage, GapRecord};
use super::error::StorageError;
use super::segment::{check_framing, Header, MIN_BATCH_LEN};

/// Bytes read at a time when every byte is needed (CRC checks, the search
/// for the next valid batch).
const WINDOW: usize = 4 << 20;

/// One walk over a segment.
pub struct Walk<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub base: u64,
    /// Bytes to walk: the file's length at open, the confirmed size in a
    /// repair.
    pub len: u64,
    /// Check every batch's CRC (the active segment at open, every segment
    /// in a repair). Otherwise only the framing is checked.
    pub crc: bool,
    /// Damage running to `len` is a torn tail to cut (the active segment at
    /// open) rather than a damaged range.
    pub torn_tail: bool,
    /// The offset this segment is known to end at (the next segment's base,
    /// or the confirmed next offset in a repair). A last batch that does not
    /// end there gets its CRC checked even without `crc`.
    pub end_offset: Option<u64>,
    /// Accepted gaps of this segment.
    pub accepted: &'a [GapRecord],
}

/// What a walk found.
#[derive(Debug)]
pub struct Walked {
    /// Where the walked data ends: `len`, or the start of a torn tail.
    pub end: u64,
    /// One past the last offset of the segment (damaged ranges included).
    pub next_offset: u64,
    pub damage: Vec<Damage>,
    /// A torn tail: its position and why the batch there is bad.
    pub torn: Option<(u64, String)>,
}

impl Walk<'_> {
    /// Walks the segment, calling `visit(pos, header)` for every valid batch
    /// in order.
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn run(&self, mut visit: impl FnMut(u64, &Header)) -> Result<Walked, StorageError> {
        let window = if self.crc { WINDOW } else { 0 };
        let mut src = Source::new(self.file, self.path, self.len, window);
        let mut out = Walked {
            end: self.len,
            next_offset: self.base,
            damage: Vec::new(),
            torn: None,
        };
        let mut pos = 0u64;
        while pos < self.len {
            if let Some(g) = self.accepted_at(pos, out.next_offset) {
                out.damage.push(Damage {
                    pos,
                    len: g.len,
                    first_offset: g.first_offset,
                    end_offset: g.end_offset,
                    accepted: true,
                    reason: "accepted gap".into(),
                });
                pos += g.len;
                out.next_offset = g.end_offset;
                continue;
            }
            let reason = match self.check_at(&mut src, pos, out.next_offset)? {
                Ok(h) => {
                    visit(pos, &h);
                    pos += u64::from(h.batch_len);
                    out.next_offset = h.next_offset();
                    continue;
                }
                Err(reason) => reason,
            };
            let next = find_next_batch(self.file, self.path, self.len, pos, out.next_offset)?;
            let (end_pos, end_offset) = match next {
                Some((q, h)) => (q, h.base_offset),
                None if self.torn_tail => {
                    out.end = pos;
                    out.torn = Some((pos, reason));
                    break;
                }
                None => (
                    self.len,
                    self.end_offset
                        .filter(|&e| e >= out.next_offset)
                        .unwrap_or(out.next_offset),
                ),
            };
            out.damage.push(Damage {
                pos,
                len: end_pos - pos,
                first_offset: out.next_offset,
                end_offset,
                accepted: false,
                reason,
            });
            pos = end_pos;
            out.next_offset = end_offset;
        }
        Ok(out)
    }

    /// The accepted gap starting at `pos`, if one is recorded and fits what
    /// the walk sees (same first offset, inside the segment).
    fn accepted_at(&self, pos: u64, expected: u64) -> Option<GapRecord> {
        let g = self.accepted.iter().find(|g| g.pos == pos && g.len > 0)?;
        if g.first_offset == expected && g.pos + g.len <= self.len && g.end_offset >= expected {
            return Some(*g);
        }
        tracing::warn!(
            segment = %self.path.display(),
            position = pos,
            "a recorded gap does not match the segment; ignoring it"
        );
        None
    }

    /// Checks the batch at `pos`; `Ok(Err(reason))` if it is bad.
    fn check_at(
        &self,
        src: &mut Source<'_>,
        pos: u64,
        expected: u64,
    ) -> Result<Result<Header, String>, StorageError> {
        let rest = self.len - pos;
        if rest < BATCH_HEADER_LEN as u64 {
            return Ok(Err(format!("{rest} bytes, shorter than a batch header")));
        }
        let h = src.header(pos)?;
        if let Err(reason) = check_framing(&h, pos, self.len, expected) {
            return Ok(Err(reason));
        }
        let last = pos + u64::from(h.batch_len) == self.len;
        let mismatched_end = last && self.end_offset.is_some_and(|e| e != h.next_offset());
        if self.crc || mismatched_end {
            if let Err(e) = check(src.bytes(pos, h.batch_len as usize)?) {
                return Ok(Err(e.to_string()));
            }
        }
        Ok(Ok(h))
    }
}

/// Finds the first valid batch that starts after `after` in `0..len` of the
/// file: whole, passing [`check`], at or after offset `expected`, and
/// skipping no more offsets than bytes (every record takes at least one).
pub fn find_next_batch(
    file: &File,
    path: &Path,
    len: u64,
    after: u64,
    expected: u64,
) -> Result<Option<(u64, Header)>, StorageError> {
    let mut src = Source::new(file, path, len, WINDOW);
    let mut p = after + 1;
    while p + BATCH_HEADER_LEN as u64 <= len {
        let b = src.bytes(p, BATCH_HEADER_LEN)?;
        // The magic and reserved bytes rule out almost every position before
        // anything is parsed.
        if b[24] != BATCH_MAGIC || b[25] != 0 || b[26] != 0 || b[27] != 0 {
            p += 1;
            continue;
        }
        let Some(h) = Header::parse(b) else {
            p += 1;
            continue;
        };
        let blen = u64::from(h.batch_len);
        let plausible = blen >= MIN_BATCH_LEN
            && p + blen <= len
            && (1..=MAX_RECORDS_PER_BATCH).contains(&h.record_count)
            && h.base_offset >= expected
            && h.base_offset - expected <= p - after;
        if plausible && check(src.bytes(p, h.batch_len as usize)?).is_ok() {
            return Ok(Some((p, h)));
        }
        p += 1;
    }
    Ok(None)
}

/// Reads a segment's bytes through a window, so a walk that needs every
/// byte does large reads, and one that needs only headers reads only those.
pub struct Source<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    window: usize,
    buf: Vec<u8>,
    at: u64,
}

impl<'a> Source<'a> {
    /// A source over `0..len` of `file`; `window` 0 reads exactly what is
    /// asked for.
    pub fn new(file: &'a File, path: &'a Path, len: u64, window: usize) -> Self {
        Source {
            file,
            path,
            len,
            window,
            buf: Vec::new(),
            at: 0,
        }
    }

    fn header(&mut self, pos: u64) -> Result<Header, StorageError> {
        let b = self.bytes(pos, BATCH_HEADER_LEN)?;
        Header::parse(b).ok_or_else(|| StorageError::Corrupt {
            path: self.path.to_path_buf(),
            position: pos,
            offsets: None,
            reason: "short batch header".into(),
        })
    }

    /// `n` bytes at `pos`; the caller keeps `pos + n <= len`.
    fn bytes(&mut self, pos: u64, n: usize) -> Result<&[u8], StorageError> {
        let end = pos + n as u64;
        let have = self.at + self.buf.len() as u64;
        if pos < self.at || end > have {
            let want = (n.max(self.window) as u64)
                .min(self.len - pos)
                .max(n as u64);
            self.buf.resize(want as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, pos)
                .map_err(|e| StorageError::io(self.path, e))?;
            self.at = pos;
        }
        let from = (pos - self.at) as usize;
        Ok(&self.buf[from..from + n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use herald_protocol::batch::stamp;
    use herald_protocol::{BatchBuilder, RecordRef};

    /// Three batches of `n` records at offsets 0, n, 2n, back to back.
    fn segment(n: u32) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for i in 0..3u64 {
            let mut b = BatchBuilder::new();
            for _ in 0..n {
                b.push(&RecordRef {
                    payload: b"payload",
                    ..RecordRef::default()
                });
            }
            let mut m = BytesMut::from(&b.finish(0, 0)[..]);
            stamp(&mut m, i * u64::from(n), 1);
            starts.push(out.len());
            out.extend_from_slice(&m);
        }
        (out, starts)
    }

    fn walk(bytes: &[u8], torn_tail: bool, crc: bool) -> Walked {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        Walk {
            file: &file,
            path: &path,
            base: 0,
            len: bytes.len() as u64,
            crc,
            torn_tail,
            end_offset: None,
            accepted: &[],
        }
        .run(|_, _| {})
        .unwrap()
    }

    #[test]
    fn a_bad_middle_batch_is_a_range_and_what_follows_stays() {
        let (mut seg, starts) = segment(4);
        seg[starts[1] + 70] ^= 0xff;
        let w = walk(&seg, true, true);
        assert!(w.torn.is_none());
        assert_eq!(w.next_offset, 12);
        assert_eq!(w.damage.len(), 1);
        let d = &w.damage[0];
        assert_eq!((d.pos, d.end_pos()), (starts[1] as u64, starts[2] as u64));
        assert_eq!((d.first_offset, d.end_offset), (4, 8));
        assert!(!d.accepted);
    }

    #[test]
    fn a_bad_last_batch_is_a_torn_tail_or_a_range_to_the_end() {
        let (mut seg, starts) = segment(4);
        seg[starts[2] + 17] ^= 0x40; // batch_len
        let w = walk(&seg, true, true);
        assert_eq!(w.torn.as_ref().map(|t| t.0), Some(starts[2] as u64));
        assert_eq!((w.end, w.next_offset), (starts[2] as u64, 8));
        let w = walk(&seg, false, false);
        assert!(w.torn.is_none());
        assert_eq!(w.damage[0].pos, starts[2] as u64);
        assert_eq!(w.end, seg.len() as u64);
    }

    #[test]
    fn a_damaged_header_is_found_past_by_the_search() {
        let (mut seg, starts) = segment(4);
        seg[starts[1] + 3] ^= 0x01; // base_offset: framing, not CRC
        let w = walk(&seg, false, false);
        assert_eq!(w.damage.len(), 1);
        assert_eq!(w.damage[0].end_pos(), starts[2] as u64);
        assert_eq!(w.next_offset, 12);
    }

    #[test]
    fn accepted_gaps_are_jumped() {
        let (mut seg, starts) = segment(4);
        seg[starts[1] + 70] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, &seg).unwrap();
        let file = File::open(&path).unwrap();
        let gap = GapRecord {
            segment: 0,
            pos: starts[1] as u64,
            len: (starts[2] - starts[1]) as u64,
            first_offset: 4,
            end_offset: 8,
        };
        let mut seen = Vec::new();
        let w = Walk {
            file: &file,
            path: &path,
            base: 0,
            len: seg.len() as u64,
            crc: true,
            torn_tail: true,
            end_offset: None,
            accepted: &[gap],
        }
        .run(|_, h| seen.push(h.base_offset))
        .unwrap();
        assert_eq!(seen, [0, 8]);
        assert!(w.damage[0].accepted);
    }
}

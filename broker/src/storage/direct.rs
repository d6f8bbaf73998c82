//! Direct (`O_DIRECT`) appends to the active segment under `always`.
//!
//! Why: on the machines we measure, a buffered `pwrite` spends most of its
//! time copying into freshly allocated page-cache pages (fio: 350-500 MB/s
//! buffered with fdatasync, 1.2-1.4 GB/s direct, at a fifth of the CPU).
//! Under `always` every group is fsynced before it is confirmed anyway, so
//! the page cache buys nothing on the write path: the device can take the
//! bytes straight from our buffer.
//!
//! `O_DIRECT` wants the buffer address, the length and the file position
//! aligned to the device's block size; batches are not. So each write starts
//! at the block boundary at or before the end of the log, re-writing the
//! partial last block from the copy kept here ([`DirectFile::tail`]), and is
//! padded with zeros to a whole block. Two consequences:
//! - While a segment is active its file may end in up to [`ALIGN`] - 1 zero
//!   bytes past the last batch. The writer's size, not the file's, is the
//!   log's end; sealing a segment cuts the padding off, and recovery drops
//!   zero padding after a crash without calling it a torn tail.
//! - Re-writing the last block writes the confirmed bytes in it again, with
//!   the same values: a torn write of that block leaves each sector either
//!   old or new, and both agree on every confirmed byte.
//!
//! Filesystems that refuse `O_DIRECT` (tmpfs on older kernels, some FUSE
//! mounts) get the buffered path, as do the other fsync policies, whose
//! whole point is to leave the data in the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// Alignment of direct writes: a multiple of every common logical block
/// size (512 and 4096 bytes).
pub const ALIGN: usize = 4096;

/// Groups smaller than this are written through the page cache even when a
/// direct handle is open. For a few KiB the copy is cheap, and the direct
/// write of a whole block followed by the fsync made publish latency at a
/// low rate (W3-lat) worse at the 99th percentile; the copy only dominates
/// for big groups. Both paths keep the tail, so they mix freely: under
/// `always` every write is fsynced before the next, so the page cache never
/// holds dirty pages a direct write would have to flush first.
pub const DIRECT_MIN_BYTES: usize = 64 * 1024;

/// The direct handle of the active segment and the bytes of its partial
/// last block.
pub struct DirectFile {
    pub file: Arc<File>,
    /// The log's bytes from the last `ALIGN` boundary to its end: what the
    /// next write must start with.
    pub tail: Vec<u8>,
}

impl DirectFile {
    /// Opens `path` for direct writes, with the log currently `size` bytes
    /// long in `buffered` (read through it to fill the tail). `None` when
    /// the filesystem does not do direct I/O.
    pub fn open(path: &Path, buffered: &File, size: u64) -> io::Result<Option<DirectFile>> {
        let file = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), "no O_DIRECT here; buffered appends");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let tail_len = (size % ALIGN as u64) as usize;
        let mut tail = vec![0u8; tail_len];
        buffered.read_exact_at(&mut tail, size - tail_len as u64)?;
        Ok(Some(DirectFile {
            file: Arc::new(file),
            tail,
        }))
    }

    /// Remembers the new partial last block after `data` was appended
    /// (directly or not), leaving the log `size` bytes long.
    pub fn advance(&mut self, data: &[u8], size: u64) {
        let keep = (size % ALIGN as u64) as usize;
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            // Still in the same block: it is the old tail plus `data`.
            self.tail.extend_from_slice(data);
        }
        debug_assert_eq!(self.tail.len(), keep);
    }
}

/// A buffer for one write: `lead` (the tail, empty on the buffered path)
/// followed by room for `len` more bytes, aligned in memory and, when
/// `padded`, later rounded up to whole blocks by [`finish`].
pub struct WriteBuf {
    vec: Vec<u8>,
    /// Bytes skipped at the start of `vec` so that the data is aligned.
    skip: usize,
}

impl WriteBuf {
    pub fn new(lead: &[u8], len: usize, aligned: bool) -> WriteBuf {
        let extra = if aligned { 2 * ALIGN } else { 0 };
        let mut vec: Vec<u8> = Vec::with_capacity(lead.len() + len + extra);
        let skip = if aligned {
            vec.as_ptr().align_offset(ALIGN).min(ALIGN)
        } else {
            0
        };
        vec.resize(skip, 0);
        vec.extend_from_slice(lead);
        WriteBuf { vec, skip }
    }

    /// Position of the next byte relative to the start of the lead.
    pub fn len(&self) -> usize {
        self.vec.len() - self.skip
    }

    pub fn put(&mut self, bytes: &[u8]) -> &mut [u8] {
        let at = self.vec.len();
        self.vec.extend_from_slice(bytes);
        &mut self.vec[at..]
    }

    /// The frozen buffer and the range of it to write: the data, padded
    /// with zeros to a whole block when `aligned`. The capacity reserved in
    /// `new` covers the padding, so nothing moves.
    pub fn finish(mut self, aligned: bool) -> (bytes::Bytes, usize, usize) {
        let logical = self.len();
        let write_len = if aligned {
            logical.div_ceil(ALIGN) * ALIGN
        } else {
            logical
        };
        self.vec.resize(self.skip + write_len, 0);
        (bytes::Bytes::from(self.vec), self.skip, write_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_buffers_are_aligned_and_padded_to_whole_blocks() {
        for (lead, len) in [(0usize, 1usize), (100, 4000), (4095, 1), (10, 3 * ALIGN)] {
            let lead = vec![7u8; lead];
            let mut b = WriteBuf::new(&lead, len, true);
            b.put(&vec![1u8; len]);
            let (bytes, skip, write_len) = b.finish(true);
            let data = &bytes[skip..skip + write_len];
            assert_eq!(data.as_ptr() as usize % ALIGN, 0);
            assert_eq!(write_len % ALIGN, 0);
            assert!(write_len >= lead.len() + len && write_len < lead.len() + len + ALIGN);
            assert!(data[..lead.len()].iter().all(|&b| b == 7));
            assert!(data[lead.len()..lead.len() + len].iter().all(|&b| b == 1));
            assert!(data[lead.len() + len..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn unaligned_buffers_are_exact() {
        let mut b = WriteBuf::new(&[], 5, false);
        b.put(b"hello");
        let (bytes, skip, len) = b.finish(false);
        assert_eq!((&bytes[skip..skip + len], skip), (&b"hello"[..], 0));
    }

    #[test]
    fn the_tail_keeps_the_partial_last_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let content: Vec<u8> = (0..ALIGN + 10).map(|i| i as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let buffered = File::open(&path).expect("open");
        let Some(mut d) = DirectFile::open(&path, &buffered, content.len() as u64).expect("open")
        else {
            return; // no O_DIRECT on this filesystem
        };
        assert_eq!(d.tail, &content[ALIGN..]);
        // 10 more bytes: the same block.
        d.advance(&[1; 10], ALIGN as u64 + 20);
        assert_eq!(&d.tail[..10], &content[ALIGN..]);
        assert_eq!(&d.tail[10..], &[1; 10]);
        // Exactly to the boundary: nothing partial.
        d.advance(&vec![2; ALIGN - 20], 2 * ALIGN as u64);
        assert!(d.tail.is_empty());
        // Past a boundary: the last partial block only.
        d.advance(&vec![3; ALIGN + 3], 3 * ALIGN as u64 + 3);
        assert_eq!(d.tail, &[3; 3]);
    }
}

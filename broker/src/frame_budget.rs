//! A connection's incoming frames, counted against the memory budget while
//! they arrive.
//!
//! The frame decoder keeps a frame's bytes until its last one has come,
//! and a peer may send all but the last byte of a `max_frame` frame and
//! wait: a hundred such connections held 820 MB that the budget did not
//! see (it counts a publish from when it is whole). [`Budgeted`] wraps the
//! read side of a connection, follows the frames' length prefixes in the
//! bytes it passes on, and charges a big frame's whole length from its
//! prefix until its last byte is read. None of a big Publish's body is read
//! while the budget is spent past its publish level: such a peer then
//! waits in TCP, as a publisher does whose complete publish does not fit.
//! Other frames are counted but never held back: an ack, say, may be what
//! frees the memory.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use herald_protocol::Opcode;

use crate::memory::{Charge, Level, MemoryBudget};

/// Frames of at least this many bytes are counted while they arrive;
/// smaller ones take little, and counting them would cost every request.
pub const COUNTED_FROM: usize = 64 * 1024;

/// What is read of a frame before deciding: its length prefix and opcode.
const HEAD: usize = 5;

/// Where the reader is in the byte stream.
enum At {
    /// At a frame boundary, with this many bytes of the next frame's length
    /// prefix and opcode seen.
    Prefix { seen: usize, bytes: [u8; HEAD] },
    /// Inside a frame: this many bytes of it to come. A big one carries
    /// its charge once the budget admitted it (`charge`), and until then
    /// nothing more is read (`admit`: its whole length).
    Body {
        left: usize,
        charge: Option<Charge>,
        admit: Option<usize>,
    },
}

/// See the module docs.
pub struct Budgeted<R> {
    inner: R,
    memory: Arc<MemoryBudget>,
    /// The connection's frame limit: a longer frame is refused by the
    /// decoder from its length, and must not be charged (a bogus length of
    /// 4 GiB would spend the whole budget until the connection closes).
    max_frame: usize,
    at: At,
    /// The wait for the budget, while a big frame waits to be admitted.
    admitted: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

const BOUNDARY: At = At::Prefix {
    seen: 0,
    bytes: [0; HEAD],
};

impl<R> Budgeted<R> {
    pub fn new(inner: R, memory: Arc<MemoryBudget>, max_frame: usize) -> Budgeted<R> {
        Budgeted {
            inner,
            memory,
            max_frame,
            at: BOUNDARY,
            admitted: None,
        }
    }

    /// Follows the frames in `bytes`, just read.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Prefix {
                    seen,
                    bytes: prefix,
                } => {
                    let n = (HEAD - *seen).min(bytes.len());
                    prefix[*seen..*seen + n].copy_from_slice(&bytes[..n]);
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == HEAD {
                        let length =
                            u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                        let total = (length as usize).saturating_add(4);
                        // The length counts the opcode, read already. A
                        // length under the header's or over the limit is the
                        // decoder's to refuse; it closes the connection.
                        let left = (length as usize).saturating_sub(1);
                        let big =
                            (COUNTED_FROM..=self.max_frame).contains(&total) && left > bytes.len();
                        let publish = prefix[4] == Opcode::Publish as u8;
                        let admitted = !(big && publish) || self.memory.admits(Level::Publish);
                        self.at = At::Body {
                            left,
                            charge: (big && admitted).then(|| self.memory.charge(total)),
                            admit: (!admitted).then_some(total),
                        };
                        if left == 0 {
                            self.at = BOUNDARY;
                        }
                    }
                }
                At::Body { left, .. } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        // The frame is whole: its charge goes with it.
                        self.at = BOUNDARY;
                    }
                }
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Budgeted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let At::Body { charge, admit, .. } = &mut this.at {
            if let Some(total) = *admit {
                if !this.memory.admits(Level::Publish) {
                    let memory = this.memory.clone();
                    let wait = this.admitted.get_or_insert_with(|| {
                        Box::pin(async move { memory.until_admitted(Level::Publish).await })
                    });
                    ready!(wait.as_mut().poll(cx));
                }
                this.admitted = None;
                *admit = None;
                *charge = Some(this.memory.charge(total));
            }
        }
        let start = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let end = buf.filled().len();
        // A read stops at no boundary: what came after a big frame's
        // prefix in the same read is read already; the next read waits.
        let filled = buf.filled();
        // Borrow apart from `this`: the bytes are in the caller's buffer.
        let read: &[u8] = &filled[start..end];
        this.follow(read);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads from `r` until `got` reaches `until` bytes (each read within
    /// 5 s, or `what` failed); returns the new total.
    async fn read_to<R: AsyncRead + Unpin>(
        r: &mut R,
        mut got: usize,
        until: usize,
        what: &str,
    ) -> usize {
        let mut buf = vec![0u8; 1 << 20];
        while got < until {
            got += tokio::time::timeout(std::time::Duration::from_secs(5), r.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what}"))
                .unwrap();
        }
        got
    }

    /// A frame of `len` bytes in all, of opcode `op` (the rest filler).
    fn frame(len: usize, op: Opcode) -> Vec<u8> {
        let mut f = ((len - 4) as u32).to_le_bytes().to_vec();
        f.push(op as u8);
        f.resize(len, 7);
        f
    }

    /// A big frame counts in full from its prefix until its last byte is
    /// read; small ones are not counted.
    #[tokio::test]
    async fn a_big_frame_is_charged_while_it_arrives() {
        let memory = MemoryBudget::new(1 << 30);
        let (mut peer, sock) = tokio::io::duplex(1 << 20);
        let mut r = Budgeted::new(sock, memory.clone(), 1 << 23);
        let mut buf = vec![0u8; 1 << 20];
        let small = frame(100, Opcode::Ping);
        peer.write_all(&small).await.unwrap();
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!((n, memory.used()), (100, 0));
        let big = frame(200_000, Opcode::Publish);
        peer.write_all(&big[..150_000]).await.unwrap();
        let got = read_to(&mut r, 0, 150_000, "the first part").await;
        assert_eq!(memory.used(), 200_000, "counted from its prefix");
        peer.write_all(&big[150_000..]).await.unwrap();
        peer.write_all(&small).await.unwrap();
        read_to(&mut r, got, 200_100, "the rest").await;
        assert_eq!(memory.used(), 0, "whole, it is the decoder's");
    }

    /// A length over the frame limit is the decoder's to refuse: it is not
    /// charged (a bogus 4 GiB would spend the budget until the connection
    /// closes).
    #[tokio::test]
    async fn a_length_over_the_frame_limit_is_not_charged() {
        let memory = MemoryBudget::new(1 << 30);
        let (mut peer, sock) = tokio::io::duplex(1 << 20);
        let mut r = Budgeted::new(sock, memory.clone(), 1 << 23);
        let mut head = u32::MAX.to_le_bytes().to_vec();
        head.push(Opcode::Publish as u8);
        head.resize(1000, 7);
        peer.write_all(&head).await.unwrap();
        read_to(&mut r, 0, 1000, "the bogus frame's start").await;
        assert_eq!(memory.used(), 0);
    }

    /// A big frame other than a Publish (an ack of many ranges, an emit) is
    /// counted but read at once even while the budget is spent: it may be
    /// what frees memory.
    #[tokio::test]
    async fn a_big_frame_other_than_a_publish_is_not_held_back() {
        let memory = MemoryBudget::new(1 << 20);
        let _spent = memory.charge(1 << 20);
        let (mut peer, sock) = tokio::io::duplex(1 << 20);
        let mut r = Budgeted::new(sock, memory.clone(), 1 << 23);
        let big = frame(300_000, Opcode::Ack);
        peer.write_all(&big[..5]).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(r.read(&mut buf).await.unwrap(), 5);
        assert_eq!(memory.used(), (1 << 20) + 300_000, "counted");
        peer.write_all(&big[5..]).await.unwrap();
        read_to(&mut r, 5, 300_000, "read while the budget is spent").await;
        assert_eq!(memory.used(), 1 << 20);
    }

    /// While the budget is spent, a big Publish's prefix is read and
    /// nothing more until memory is freed.
    #[tokio::test]
    async fn a_big_frame_waits_for_the_budget() {
        let memory = MemoryBudget::new(1 << 20);
        let spent = memory.charge(1 << 20);
        let (mut peer, sock) = tokio::io::duplex(1 << 20);
        let mut r = Budgeted::new(sock, memory.clone(), 1 << 23);
        let big = frame(300_000, Opcode::Publish);
        peer.write_all(&big[..5]).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(r.read(&mut buf).await.unwrap(), 5);
        peer.write_all(&big[5..]).await.unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), r.read(&mut buf)).await;
        assert!(
            waiting.is_err(),
            "its body is not read while the budget is spent"
        );
        drop(spent);
        read_to(&mut r, 5, 300_000, "read once memory is freed").await;
        assert_eq!(memory.used(), 0);
    }
}

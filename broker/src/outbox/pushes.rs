//! The push queue: deliveries (and other pushed frames) waiting for a
//! connection's writer.
//!
//! Every connection has one, and most connections are idle most of the
//! time, so it costs nothing until the first push: a channel allocates a
//! block of slots when it is made (about 2 KiB for [`Out`], a tenth of an
//! idle WebSocket session's memory, issue 12), a `VecDeque` at its first
//! push. The writer takes everything queued under one lock, and gives a
//! grown queue back when it finds it empty. It is unbounded: what is queued
//! is bounded by the credit of the connection's subscriptions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Out;

/// Past this many slots, a queue found empty is given back.
const KEEP_SLOTS: usize = 64;

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Out>,
    /// The writer is gone: pushes are refused.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer after a push to an empty queue.
    ready: Notify,
}

/// The pushing side, one per [`super::Outbox`] clone.
#[derive(Debug, Clone, Default)]
pub(super) struct Pusher(Arc<Shared>);

/// The writer's side.
#[derive(Debug)]
pub(super) struct Taker(Arc<Shared>);

/// A new, empty queue: nothing allocated but the shared header.
pub(super) fn queue() -> (Pusher, Taker) {
    let shared = Arc::new(Shared::default());
    (Pusher(shared.clone()), Taker(shared))
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding this lock leaves a queue of plain values
    // behind, still usable.
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pusher {
    /// Queues `out`; gives it back if the writer is gone.
    pub(super) fn push(&self, out: Out) -> Result<(), Out> {
        let mut s = lock(&self.0);
        if s.closed {
            return Err(out);
        }
        let was_empty = s.items.is_empty();
        s.items.push_back(out);
        drop(s);
        if was_empty {
            self.0.ready.notify_one();
        }
        Ok(())
    }
}

impl Pusher {
    /// Queues every item of `items` (emptied), in order, under one lock and
    /// with at most one wake of the writer, so that it finds them together
    /// and writes them in one go. False, with `items` dropped, if the
    /// writer is gone.
    pub(super) fn push_all(&self, items: &mut Vec<Out>) -> bool {
        let mut s = lock(&self.0);
        if s.closed {
            drop(s);
            items.clear();
            return false;
        }
        let was_empty = s.items.is_empty();
        s.items.extend(items.drain(..));
        drop(s);
        if was_empty {
            self.0.ready.notify_one();
        }
        true
    }
}

impl Taker {
    /// Moves everything queued to the back of `into` (one lock for the
    /// lot); false if nothing was queued.
    pub(super) fn take_all(&self, into: &mut VecDeque<Out>) -> bool {
        let mut s = lock(&self.0);
        if s.items.is_empty() {
            // Found empty: a queue that a burst grew is given back, so an
            // idle connection keeps no slots.
            if s.items.capacity() > KEEP_SLOTS {
                s.items = VecDeque::new();
            }
            return false;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut s.items);
        } else {
            into.extend(s.items.drain(..));
        }
        true
    }

    /// Resolves once something may have been pushed since the last
    /// [`Taker::take_all`] that found the queue empty (possibly
    /// spuriously: the caller takes again).
    pub(super) async fn pushed(&self) {
        self.0.ready.notified().await
    }

    /// Refuses further pushes and hands back what is queued.
    pub(super) fn close(&self) -> VecDeque<Out> {
        let mut s = lock(&self.0);
        s.closed = true;
        std::mem::take(&mut s.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(n: u8) -> Out {
        Out::Frame(Bytes::from(vec![n]))
    }

    fn byte(o: &Out) -> u8 {
        match o {
            Out::Frame(f) => f[0],
            _ => unreachable!("only frames are pushed here"),
        }
    }

    #[test]
    fn nothing_is_allocated_until_the_first_push() {
        let (_p, t) = queue();
        assert_eq!(lock(&t.0).items.capacity(), 0);
    }

    #[test]
    fn items_come_out_in_order_and_a_grown_queue_is_given_back_when_empty() {
        let (p, t) = queue();
        p.push(frame(0)).unwrap();
        let mut got = VecDeque::new();
        assert!(t.take_all(&mut got));
        for i in 1..=200u8 {
            p.push(frame(i)).unwrap();
        }
        // Taken into a non-empty queue: moved, so the queue keeps the
        // slots the burst grew it to.
        assert!(t.take_all(&mut got));
        assert!(lock(&t.0).items.capacity() >= 200);
        let order: Vec<u8> = got.iter().map(byte).collect();
        assert_eq!(order, (0..=200u8).collect::<Vec<_>>());
        assert!(!t.take_all(&mut got));
        assert_eq!(
            lock(&t.0).items.capacity(),
            0,
            "an empty queue keeps no slots"
        );
    }

    #[test]
    fn a_closed_queue_refuses_pushes_and_hands_back_what_it_held() {
        let (p, t) = queue();
        p.push(frame(1)).unwrap();
        let left = t.close();
        assert_eq!(left.len(), 1);
        assert!(p.push(frame(2)).is_err());
    }

    #[tokio::test]
    async fn a_push_to_an_empty_queue_wakes_the_taker() {
        let (p, t) = queue();
        let mut got = VecDeque::new();
        assert!(!t.take_all(&mut got));
        let waiter = tokio::spawn(async move {
            t.pushed().await;
            let mut got = VecDeque::new();
            t.take_all(&mut got);
            got.len()
        });
        tokio::task::yield_now().await;
        p.push(frame(1)).unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(n, 1);
    }
}

//! The queue between the inbox reader task and the [`crate::Inbox`]
//! stream: the reader hands over every event it has ready under one lock
//! and wakes the stream once; the stream takes everything queued at once
//! and yields it from its own buffer.
//!
//! A channel moved each event on its own (a slot, a permit and a wake per
//! event, and several copies of the event through the channel's futures):
//! in a busy room that was a tenth of the client's CPU.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

pub(crate) struct Handoff<T> {
    inner: Mutex<Inner<T>>,
    /// Items queued beyond which the giver waits (it may overshoot by one
    /// batch): while it waits its deliveries stay unacked and the broker's
    /// prefetch window stops the flow.
    cap: usize,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    taker: Option<Waker>,
    giver: Option<Waker>,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

impl<T> Handoff<T> {
    pub(crate) fn new(cap: usize) -> Handoff<T> {
        Handoff {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
                taker: None,
                giver: None,
            }),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready when the giver may queue more; otherwise it is woken once the
    /// taker has taken what is queued.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.lock();
        if q.items.len() < self.cap {
            return Poll::Ready(());
        }
        q.giver = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues `items` (leaving the vector empty) and wakes the taker.
    pub(crate) fn give(&self, items: &mut Vec<T>) {
        if items.is_empty() {
            return;
        }
        let mut q = self.lock();
        q.items.extend(items.drain(..));
        wake(&mut q.taker);
    }

    /// No more items will come; the taker ends once it has taken the rest.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        wake(&mut q.taker);
    }

    /// Moves everything queued into `into` (which must be empty): Ready
    /// with true when it took something, with false once closed and empty.
    pub(crate) fn poll_take(&self, into: &mut VecDeque<T>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut q = self.lock();
        if q.items.is_empty() {
            if q.closed {
                return Poll::Ready(false);
            }
            q.taker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut q.items, into);
        wake(&mut q.giver);
        Poll::Ready(true)
    }

    /// Puts items taken but not yielded back at the front, in order (a
    /// stream dropped with events in its buffer).
    pub(crate) fn put_back(&self, mut items: VecDeque<T>) {
        if items.is_empty() {
            return;
        }
        let mut q = self.lock();
        items.append(&mut q.items);
        q.items = items;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    #[test]
    fn items_come_out_in_order_and_put_back_keeps_it() {
        let h = Handoff::new(4);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut out = VecDeque::new();
        assert!(h.poll_take(&mut out, &mut cx).is_pending());
        h.give(&mut vec![1, 2]);
        h.give(&mut vec![3]);
        assert_eq!(h.poll_take(&mut out, &mut cx), Poll::Ready(true));
        assert_eq!(out, [1, 2, 3]);
        out.pop_front();
        h.give(&mut vec![4]);
        h.put_back(std::mem::take(&mut out));
        assert_eq!(h.poll_take(&mut out, &mut cx), Poll::Ready(true));
        assert_eq!(out, [2, 3, 4]);
    }

    #[test]
    fn the_giver_waits_while_full_and_the_taker_ends_after_close() {
        let h = Handoff::new(2);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(h.poll_room(&mut cx).is_ready());
        h.give(&mut vec![1, 2]);
        assert!(h.poll_room(&mut cx).is_pending());
        let mut out = VecDeque::new();
        assert_eq!(h.poll_take(&mut out, &mut cx), Poll::Ready(true));
        assert!(h.poll_room(&mut cx).is_ready());
        h.close();
        out.clear();
        assert_eq!(h.poll_take(&mut out, &mut cx), Poll::Ready(false));
    }
}

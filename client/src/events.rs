//! Connection state changes, as a stream the application can watch.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;

/// Events buffered per [`Events`] receiver; a receiver that falls further
/// behind skips the oldest ones (it is told nothing else: events are
/// informational, the client's behaviour does not depend on them being read).
pub(crate) const EVENT_BUFFER: usize = 1024;

/// What happened to the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The first connection is up (handshake done).
    Connected,
    /// The connection dropped; the client is about to reconnect.
    Disconnected {
        /// Why, in words (I/O error, broker going away, heartbeat missed).
        reason: String,
    },
    /// A reconnect attempt is starting (1 for the first attempt after a
    /// drop).
    Reconnecting {
        /// Attempts made since the connection dropped, this one included.
        attempt: u32,
    },
    /// A reconnect succeeded: handshake done, subscriptions restored and
    /// in-flight publishes re-sent.
    Reconnected,
    /// The token provider gave a new token and the broker accepted it on
    /// the open connection.
    TokenRefreshed,
    /// Getting or sending a new token failed; the broker closes the
    /// connection when the old one expires, and the next handshake asks
    /// the provider again.
    TokenRefreshFailed {
        /// Why, in words.
        reason: String,
    },
    /// The client is closed, or gave up reconnecting. Nothing follows.
    Closed,
}

/// A stream of [`ConnectionEvent`]s, from [`crate::Client::events`].
///
/// It sees the events that happen after it was created.
pub struct Events {
    inner: Pin<Box<dyn Stream<Item = ConnectionEvent> + Send>>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<ConnectionEvent>) -> Events {
        let s = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((ev, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Events { inner: Box::pin(s) }
    }

    /// The next event; `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = ConnectionEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

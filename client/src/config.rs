//! Client settings. Every queue and window the client keeps is bounded by a
//! field here.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;

use crate::tls::TlsOptions;

/// Gets a fresh token: called for every handshake and when the broker says
/// the connection's token is about to expire (see
/// [`crate::ClientBuilder::token_provider`]).
#[derive(Clone)]
pub struct TokenProvider(
    pub(crate) Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>,
);

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// What a publish does when the publish buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Wait until confirms free room (the default).
    #[default]
    Wait,
    /// Fail at once with [`crate::Error::BufferFull`].
    Fail,
}

/// How reconnect attempts are spaced: exponential backoff with full jitter
/// between `initial` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Delay before the first reconnect attempt's successor (the first
    /// attempt after a drop is made at once).
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Attempts after a drop before giving up; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The pause after failed attempt number `attempt` (1-based): the
    /// exponential ceiling `initial * 2^(attempt-1)` capped at `max`, of which
    /// a random 50-100% is taken so that many clients restarted together do
    /// not reconnect in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let ceiling = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        ceiling.mul_f64(jitter)
    }
}

/// Everything a [`crate::Client`] can be told; built by
/// [`crate::ClientBuilder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The broker: `host:port` (TCP), or `ws://host:port/path` /
    /// `wss://…` (its HTTP listener's WebSocket, usually `/ws`; feature
    /// `ws`).
    pub addr: String,
    /// Free text the broker logs ("billing-worker/1.2").
    pub client_name: String,
    /// A stable identity; when `None` the broker assigns one at the first
    /// handshake and the client reuses it on every reconnect.
    pub client_id: Option<String>,
    /// Authentication token sent in the handshake (when there is no
    /// `token_provider`).
    pub token: Option<String>,
    /// Where fresh tokens come from; wins over `token`.
    pub token_provider: Option<TokenProvider>,
    /// TLS settings; `None` connects in plaintext.
    pub tls: Option<TlsOptions>,
    /// Reconnect pacing.
    pub backoff: Backoff,
    /// Deadline of one connect plus handshake.
    pub connect_timeout: Duration,
    /// Deadline of subscribe, unsubscribe and admin requests (publishes have
    /// none: they are re-sent across reconnects until confirmed).
    pub request_timeout: Duration,
    /// Publishes accepted but not yet confirmed, counted in messages, across
    /// all producers of the client. This is the buffer that fills while the
    /// broker is unreachable.
    pub max_buffered_messages: usize,
    /// The same bound in payload bytes.
    pub max_buffered_bytes: usize,
    /// What a publish does when the buffer is full.
    pub overflow: OverflowPolicy,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Most bytes in one batch (further capped by the broker's `max_batch`).
    pub max_batch_bytes: usize,
    /// Batches in flight per producer (sent, not yet confirmed).
    pub max_inflight_batches: usize,
    /// Bytes the connection may have queued for the socket before it stops
    /// taking new commands, so a slow network pushes back on callers.
    pub max_write_buffer: usize,
}

impl ClientConfig {
    /// Defaults for a broker at `addr`.
    pub fn new(addr: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr: addr.into(),
            client_name: format!("herald-client/{}", env!("CARGO_PKG_VERSION")),
            client_id: None,
            token: None,
            token_provider: None,
            tls: None,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_buffered_messages: 100_000,
            max_buffered_bytes: 64 << 20,
            overflow: OverflowPolicy::Wait,
            max_batch_records: 4096,
            max_batch_bytes: 1 << 20,
            max_inflight_batches: 32,
            max_write_buffer: 4 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_attempts: None,
        };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_millis(1000));
        }
    }
}

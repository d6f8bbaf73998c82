//! The one error type of the client.

use herald_protocol::ErrorCode;

/// Everything a client call can fail with.
///
/// The variants tell apart what a caller reacts to differently: the broker
/// said no ([`Error::Broker`]), the client is gone for good
/// ([`Error::ConnectionLost`]), a deadline passed ([`Error::Timeout`]), the
/// call itself was wrong ([`Error::InvalidArgument`]), or the bounded
/// publish buffer is full ([`Error::BufferFull`]).
///
/// A dropped connection is *not* an error by itself: the client reconnects
/// and re-sends what was in flight, so callers only see
/// [`Error::ConnectionLost`] once reconnecting gave up or the client closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker rejected the request.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The stable error code.
        code: ErrorCode,
        /// The broker's explanation, for humans.
        message: String,
    },
    /// The connection is gone for good: reconnecting gave up after its last
    /// attempt, or the client was closed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The first connection attempt of [`crate::ClientBuilder::connect`]
    /// failed (later drops are retried instead).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address that was tried.
        addr: String,
        /// Why (I/O error, handshake refused, timeout).
        reason: String,
    },
    /// The request did not complete within its deadline.
    #[error("timed out")]
    Timeout,
    /// The call was malformed (empty topic, record larger than a batch may
    /// be, ...); retrying it will not help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The publish buffer (messages accepted but not yet confirmed) is at
    /// its limit and the overflow policy is [`crate::OverflowPolicy::Fail`].
    #[error("publish buffer full")]
    BufferFull,
    /// The broker answered with something this client did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Not fatal: the stream goes on. Records `first..=last` of a group
    /// subscription (or of a room, in [`crate::Inbox`]) were deleted by
    /// retention before they could be delivered; the group moved past them.
    /// `room` names the room for an inbox event.
    #[error("{} records (offsets {first}..={last}) were deleted by retention before they could be delivered{}", last - first + 1, room.as_ref().map(|r| format!(" in room {r:?}")).unwrap_or_default())]
    Skipped {
        /// The first offset that will not be delivered.
        first: u64,
        /// The last one.
        last: u64,
        /// The room, for an event from a room's log.
        room: Option<String>,
    },
}

impl Error {
    /// Builds [`Error::Broker`] from a wire error body.
    pub(crate) fn from_body(code: u16, message: String) -> Error {
        Error::Broker {
            code: ErrorCode::from_u16(code),
            message,
        }
    }

    /// The broker's error code, if this is a broker error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The broker's error type, and how each error is told to a peer.

use herald_protocol::{ErrorCode, Message};

use crate::group::store::StoreError;
use crate::storage::StorageError;

/// Errors of broker operations. Each maps to a stable wire [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {name:?} is unavailable: {reason}")]
    TopicUnavailable { name: String, reason: String },
    #[error("topic {0:?} already exists with different settings")]
    TopicExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown subscription {0}")]
    UnknownSubscription(u64),
    #[error("group {0:?} has active members")]
    GroupActive(String),
    #[error("topic {topic:?} has no group {group:?}")]
    UnknownGroup { topic: String, group: String },
    /// The group's state file is damaged or unreadable; `reason` names the
    /// file. Resetting the group replaces it.
    #[error("group {group:?} is unavailable: {reason}; resetting the group replaces its state")]
    GroupUnavailable { group: String, reason: String },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The connection's token expired (or the one presented had).
    #[error("token expired: {0}")]
    TokenExpired(String),
    /// Settings that cannot work (a key that does not load, an exposed
    /// listener without authentication); reported at start.
    #[error("{0}")]
    Config(String),
    #[error("limit reached: {0}")]
    Busy(String),
    #[error("broker is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    GroupStore(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// A write to a replicated topic reached a node that does not lead it;
    /// the message names the leader when one is known.
    #[error("{0}")]
    NotLeader(String),
    /// A durable room whose member file could not be read at start.
    #[error("room {name:?} is unavailable: {reason}")]
    RoomUnavailable { name: String, reason: String },
    /// The listener could not be bound. The cause is part of the message and
    /// not a `source`, so an error chain prints it once.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// Another broker holds the data folder's lock.
    #[error("data folder {} is in use by another broker ({holder})", dir.display())]
    DataDirInUse {
        dir: std::path::PathBuf,
        holder: String,
    },
    /// The data folder's lock could not be taken at all.
    #[error("cannot lock data folder {}: {error}", dir.display())]
    DataDirLock {
        dir: std::path::PathBuf,
        error: std::io::Error,
    },
}

impl BrokerError {
    /// The code sent to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            BrokerError::TopicUnavailable { .. } => ErrorCode::TopicUnavailable,
            BrokerError::TopicExists(_) => ErrorCode::TopicExists,
            BrokerError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            BrokerError::UnknownSubscription(_) => ErrorCode::UnknownSubscription,
            BrokerError::GroupActive(_) => ErrorCode::GroupActive,
            BrokerError::UnknownGroup { .. } => ErrorCode::UnknownGroup,
            BrokerError::GroupUnavailable { .. } => ErrorCode::GroupUnavailable,
            BrokerError::Busy(_) => ErrorCode::Busy,
            BrokerError::Unauthorized(_) => ErrorCode::Unauthorized,
            BrokerError::TokenExpired(_) => ErrorCode::TokenExpired,
            BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
            BrokerError::NotLeader(_) => ErrorCode::NotLeader,
            BrokerError::Storage(e) => match e {
                StorageError::SequenceGap { .. } => ErrorCode::SequenceGap,
                StorageError::Closed => ErrorCode::ShuttingDown,
                e if e.is_storage_full() => ErrorCode::StorageFull,
                StorageError::Io { source, .. } if crate::fsutil::is_out_of_files(source) => {
                    ErrorCode::Busy
                }
                StorageError::Corrupt { .. } => ErrorCode::Corrupt,
                _ => ErrorCode::Internal,
            },
            BrokerError::RoomUnavailable { .. } => ErrorCode::RoomUnavailable,
            BrokerError::GroupStore(e) if e.is_storage_full() => ErrorCode::StorageFull,
            BrokerError::GroupStore(StoreError::Corrupt { .. }) => ErrorCode::GroupUnavailable,
            BrokerError::Io(e) if crate::fsutil::is_storage_full(e) => ErrorCode::StorageFull,
            // Out of file descriptors (too many topics open, or
            // connections): passes; the client may retry.
            BrokerError::Io(e) if crate::fsutil::is_out_of_files(e) => ErrorCode::Busy,
            BrokerError::GroupStore(StoreError::Io { source, .. })
                if crate::fsutil::is_out_of_files(source) =>
            {
                ErrorCode::Busy
            }
            BrokerError::GroupStore(_)
            | BrokerError::Io(_)
            | BrokerError::Internal(_)
            | BrokerError::Config(_)
            | BrokerError::Listen { .. }
            | BrokerError::DataDirInUse { .. }
            | BrokerError::DataDirLock { .. } => ErrorCode::Internal,
        }
    }

    /// The error frame for this error.
    pub fn to_message(&self) -> Message {
        Message::error(self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running out of file descriptors is `Busy` (it passes), not
    /// `Internal`, wherever the I/O error surfaces.
    #[test]
    fn out_of_files_is_busy_not_internal() {
        let emfile = || std::io::Error::from_raw_os_error(libc::EMFILE);
        let path = std::path::PathBuf::from("/data/t");
        assert_eq!(BrokerError::Io(emfile()).code(), ErrorCode::Busy);
        let storage = StorageError::io(&path, emfile());
        assert_eq!(BrokerError::Storage(storage).code(), ErrorCode::Busy);
        let store = StoreError::Io {
            path,
            source: emfile(),
        };
        assert_eq!(BrokerError::GroupStore(store).code(), ErrorCode::Busy);
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(BrokerError::Io(other).code(), ErrorCode::Internal);
    }
}

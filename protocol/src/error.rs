//! Errors raised while decoding bytes that came off the wire.

use thiserror::Error;

/// Why a frame, a control body or a record batch was rejected.
///
/// Every variant carries enough context to tell the peer (and the log) exactly
/// what was wrong; none of them is ever a panic.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix announces more than the negotiated maximum. Raised
    /// before anything is allocated for the frame.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    /// The length prefix is smaller than the fixed header that must follow it.
    #[error("frame length {len} is shorter than the {min}-byte header")]
    FrameTooShort { len: usize, min: usize },
    /// An opcode this version of the protocol does not know.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// Flags or reserved bits that must be zero were not.
    #[error("reserved header bits set: flags 0x{flags:02x}, reserved 0x{reserved:04x}")]
    ReservedBits { flags: u8, reserved: u16 },
    /// A body or batch ended before a field it announced.
    #[error("unexpected end of {what}: need {need} bytes at offset {offset}, have {have}")]
    UnexpectedEof {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A body had bytes left over after its last field.
    #[error("{what}: {extra} trailing bytes")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A postcard-encoded control body did not parse.
    #[error("malformed {what} body: {reason}")]
    BadBody { what: &'static str, reason: String },
    /// A record batch failed validation.
    #[error("invalid record batch: {0}")]
    BadBatch(BatchError),
    /// A text field was not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
}

/// What exactly is wrong with a record batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than its {min}-byte header")]
    TooShort { len: usize, min: usize },
    #[error("batch length field says {declared} bytes but {actual} are present")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("unsupported batch magic {0}")]
    BadMagic(u8),
    #[error("reserved batch fields set: attributes 0x{attributes:02x}, reserved 0x{reserved:04x}")]
    Reserved { attributes: u8, reserved: u16 },
    #[error("crc mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    Crc { stored: u32, computed: u32 },
    #[error("batch declares {0} records; a batch holds 1 to 1048576")]
    BadCount(u32),
    #[error("record {index}: {reason}")]
    Record { index: u32, reason: &'static str },
    #[error("records end at byte {end} but the batch is {len} bytes")]
    TrailingRecordBytes { end: usize, len: usize },
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

impl From<BatchError> for WireError {
    fn from(e: BatchError) -> Self {
        WireError::BadBatch(e)
    }
}

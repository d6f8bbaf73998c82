//! Turning a [`StartPosition`] into an offset of a topic's log, the same way
//! for Subscribe and ResetGroup: an offset outside the log is an error that
//! states the valid range, never silently moved to the nearest end.

use herald_protocol::StartPosition;

use crate::storage::Log;
use crate::BrokerError;

/// The offset `start` names in `log`.
///
/// # Errors
/// `InvalidArgument` for [`StartPosition::Resume`] (it is not a position:
/// callers that give it a meaning handle it first) and for an offset
/// outside `first_offset..=next_offset`; a storage error from a timestamp
/// lookup.
pub fn resolve(log: &Log, start: StartPosition) -> Result<u64, BrokerError> {
    match start {
        StartPosition::Resume => Err(BrokerError::InvalidArgument(
            "resume is not a position; use earliest, latest, an offset or a time".into(),
        )),
        StartPosition::Earliest => Ok(log.first_offset()),
        StartPosition::Latest => Ok(log.next_offset()),
        StartPosition::Offset(o) => check_offset(o, log.first_offset(), log.next_offset()),
        StartPosition::Timestamp(t) => Ok(log.offset_for_timestamp(t)?),
    }
}

/// `o` if it lies in `first..=next` (`next` meaning "from the next record").
fn check_offset(o: u64, first: u64, next: u64) -> Result<u64, BrokerError> {
    if (first..=next).contains(&o) {
        return Ok(o);
    }
    Err(BrokerError::InvalidArgument(format!(
        "offset {o} is out of range: the topic holds offsets {first} to {next} \
         ({next} = the next record to be written; use earliest or latest for the ends)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_outside_the_log_are_refused_with_the_range() {
        assert_eq!(check_offset(5, 5, 9).unwrap(), 5);
        assert_eq!(check_offset(9, 5, 9).unwrap(), 9);
        let e = check_offset(10, 5, 9).unwrap_err().to_string();
        assert!(e.contains("5 to 9"), "{e}");
        assert!(check_offset(4, 5, 9).is_err());
        assert!(check_offset(u64::MAX, 0, 0).is_err());
    }
}

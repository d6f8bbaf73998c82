//! Which names topics and groups may have.

use crate::BrokerError;

/// Longest topic or group name, so a name always fits a file name with room
/// for suffixes such as `.dlq`.
pub const MAX_NAME_LEN: usize = 200;

/// Longest name of a topic the broker makes for another one: a dead-letter
/// topic is its topic's name and the dead-letter suffix (`.dlq`), so a
/// topic of 200 characters has one of 204. Still well within the 255
/// bytes of a file name.
pub const MAX_INTERNAL_NAME_LEN: usize = MAX_NAME_LEN + 40;

/// Checks a topic or group name: 1 to 200 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with a dot.
///
/// # Errors
/// [`BrokerError::InvalidArgument`] saying what is wrong.
pub fn validate(kind: &str, name: &str) -> Result<(), BrokerError> {
    validate_up_to(kind, name, MAX_NAME_LEN)
}

/// [`validate`], for a name of at most `max` characters.
pub fn validate_up_to(kind: &str, name: &str, max: usize) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > max {
        return Err(BrokerError::InvalidArgument(format!(
            "{kind} name must be 1 to {max} characters, got {}",
            name.len()
        )));
    }
    if name.starts_with('.') {
        return Err(BrokerError::InvalidArgument(format!(
            "{kind} name {name:?} must not start with '.'"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(BrokerError::InvalidArgument(format!(
            "{kind} name {name:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("topic", "orders.eu-1_x").is_ok());
        assert!(validate("topic", "").is_err());
        assert!(validate("topic", ".hidden").is_err());
        assert!(validate("topic", "a/b").is_err());
        assert!(validate("topic", "a b").is_err());
        assert!(validate("topic", &"x".repeat(201)).is_err());
    }
}

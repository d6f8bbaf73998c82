//! Which names topics and groups may have.

use crate::BrokerError;

/// Longest topic or group name, so a name always fits a file name with room
/// for suffixes such as `.dlq`.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a topic or group name: 1 to 200 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with a dot.
///
/// # Errors
/// [`BrokerError::InvalidArgument`] saying what is wrong.
pub fn validate(kind: &str, name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(BrokerError::InvalidArgument(format!(
            "{kind} name must be 1 to {MAX_NAME_LEN} characters, got {}",
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

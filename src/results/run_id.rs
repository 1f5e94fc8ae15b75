//! Run ids: `PREFIX-YYYYMMDD-HHMMSS` in UTC, sortable and safe as directory names.

use std::time::{SystemTime, UNIX_EPOCH};

/// A new run id for `prefix` at the current time.
pub fn new_run_id(prefix: &str) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{prefix}-{}", utc_stamp(seconds))
}

/// `YYYYMMDD-HHMMSS` of a Unix time, in UTC.
fn utc_stamp(unix_seconds: u64) -> String {
    let seconds = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y%m%d-%H%M%S")
        .to_string()
}

/// Whether `id` can name a directory: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_in_utc() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_796_000_000), "20261130-005320");
        assert!(new_run_id("load").starts_with("load-20"));
    }

    #[test]
    fn valid_ids() {
        assert!(is_valid_run_id("load-20261130-101500"));
        assert!(!is_valid_run_id("../x"));
        assert!(!is_valid_run_id(""));
        assert!(!is_valid_run_id("a b"));
    }
}

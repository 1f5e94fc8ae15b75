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
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
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

//! Sizes Linux reports in `/proc` files of `Key:   N kB` lines (`/proc/meminfo`,
//! `/proc/self/status`).

use std::path::Path;

/// The size `key` has in the `/proc` file at `path`, in bytes; `None` where the file or the
/// key is missing (not Linux) or the line does not read as `KEY: N kB`.
pub fn proc_bytes(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    kib_line(&text, key).map(|kib| kib * 1024)
}

/// The number of `KEY: N kB` in `text`.
fn kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_key_asked_for_and_nothing_else() {
        let text = "MemTotal:       32000 kB\nMemAvailable:   2048 kB\nMemAvailableX: 1 kB\n";
        assert_eq!(kib_line(text, "MemAvailable"), Some(2048));
        assert_eq!(kib_line(text, "MemTotal"), Some(32000));
        assert_eq!(kib_line(text, "VmHWM"), None);
        assert_eq!(kib_line("VmHWM: lots kB", "VmHWM"), None);
        assert_eq!(
            proc_bytes(Path::new("/nonexistent/meminfo"), "MemTotal"),
            None
        );
    }
}

//! An error and its causes in words, on one line.

use std::error::Error;

/// The error and its causes, each said once: a cause whose words an earlier message
/// already holds (`cannot read X: No such file`) is not repeated.
pub fn error_text(err: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(err);
    while let Some(current) = cause {
        let line = current.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_said_are_not_repeated() {
        let err = anyhow::anyhow!("No such file").context("cannot read x: No such file");
        assert_eq!(error_text(err.as_ref()), "cannot read x: No such file");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(err.as_ref()), "outer: inner");
        let io = std::io::Error::other("refused");
        assert_eq!(error_text(&io), "refused");
    }
}

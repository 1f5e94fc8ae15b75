//! Stop sequences over streamed text: text is released as soon as it cannot be the start
//! of a stop sequence, and generation ends where one appears, without it in the output
//! (the OpenAI API's behaviour), also when it spans several tokens.

/// Watches the generated text of one sequence for its stop sequences.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Generated text not yet released.
    pending: String,
}

/// What a piece of generated text leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Text that is safe to send (possibly empty); generation goes on.
    Text(String),
    /// A stop sequence appeared: the text before it, and generation ends.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for these stop sequences (none: every piece is released at once).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds generated text and says what can be released.
    pub fn push(&mut self, piece: &str) -> Release {
        self.pending.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.pending.truncate(at);
            return Release::Stopped(std::mem::take(&mut self.pending));
        }
        let held = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.pending, stop))
            .max()
            .unwrap_or(0);
        let release = self.pending.len() - held;
        let rest = self.pending.split_off(release);
        Release::Text(std::mem::replace(&mut self.pending, rest))
    }

    /// The text held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<Release>, String) {
        let mut matcher = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let releases = pieces.iter().map(|p| matcher.push(p)).collect();
        (releases, matcher.finish())
    }

    #[test]
    fn releases_everything_without_stops() {
        let (releases, rest) = run(&[], &["a", "b"]);
        assert_eq!(
            releases,
            vec![Release::Text("a".into()), Release::Text("b".into())]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn a_stop_split_over_pieces_is_held_then_cut() {
        let (releases, _) = run(&["END"], &["one E", "N", "D two"]);
        assert_eq!(
            releases,
            vec![
                Release::Text("one ".into()),
                Release::Text("".into()),
                Release::Stopped("".into()),
            ]
        );
        let (releases, _) = run(&["\n\n", "Q:"], &["answer", " is 4", "\n", "\nQ: next"]);
        assert_eq!(releases[3], Release::Stopped("".into()));
        assert_eq!(releases[1], Release::Text(" is 4".into()));
    }

    #[test]
    fn a_false_start_is_released_and_the_tail_flushed_at_the_end() {
        let (releases, rest) = run(&["END"], &["EN", "d of it", " E"]);
        assert_eq!(releases[0], Release::Text("".into()));
        assert_eq!(releases[1], Release::Text("ENd of it".into()));
        assert_eq!(releases[2], Release::Text(" ".into()));
        assert_eq!(rest, "E");
        let (releases, _) = run(&["é!"], &["café", "!"]);
        assert_eq!(
            releases,
            vec![Release::Text("caf".into()), Release::Stopped("".into())]
        );
    }
}

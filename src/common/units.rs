//! The one parser of durations and plain numbers the flags, job files and SLO gates share,
//! the serde adapters that let a job file write a duration as `90`, `90s`, `5m` or `1h30m`, and
//! seconds written for people.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The longest duration anything takes: a year. Longer ones are typing mistakes, and
/// would overflow the clock arithmetic of deadlines.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Units of a duration: its suffix and seconds, largest first.
const UNITS: [(&str, f64); 4] = [("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)];

/// Parses `90` (seconds), `90s`, `1500ms`, `5m`, `2h` or a sum of them largest first, as
/// Kubernetes and Go write durations (`1h30m`, `2m30.5s`), at most a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let seconds = match parse_non_negative(text) {
        Some(seconds) => seconds,
        None => sum_of_units(text).ok_or_else(|| {
            format!("{text:?} is not a duration; write e.g. 90, 90s, 1500ms, 5m, 2h or 1h30m")
        })?,
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| *duration <= MAX_DURATION)
        .ok_or_else(|| format!("{text:?} is longer than a year; write e.g. 90s, 5m or 2h"))
}

/// The seconds of `1h30m`: numbers each followed by a unit of [`UNITS`], each unit at most
/// once and smaller than the one before; `None` for anything else.
fn sum_of_units(text: &str) -> Option<f64> {
    let mut rest = text;
    let mut smallest_so_far = None;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_length = number_prefix(rest);
        let number = parse_non_negative(&rest[..number_length])?;
        let after = &rest[number_length..];
        // The longest suffix that matches (`ms` before `m`).
        let (rank, (unit, scale)) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (unit, _))| after.starts_with(unit))
            .max_by_key(|(_, (unit, _))| unit.len())?;
        if smallest_so_far.is_some_and(|smallest| rank <= smallest) {
            return None;
        }
        smallest_so_far = Some(rank);
        seconds += number * scale;
        rest = &after[unit.len()..];
    }
    Some(seconds)
}

/// The length of the number `text` starts with (digits, a point, an exponent).
fn number_prefix(text: &str) -> usize {
    let mut previous = ' ';
    text.find(|c: char| {
        let part = c.is_ascii_digit()
            || c == '.'
            || c == 'e'
            || (matches!(c, '+' | '-') && previous == 'e');
        previous = c;
        !part
    })
    .unwrap_or(text.len())
}

/// A finite number at least 0, or `None`.
pub fn parse_non_negative(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// Deserializes a duration written as a number of seconds or as [`parse_duration`] text.
pub fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = deserialize_text(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Deserializes text that a YAML writer may have written as a number (`prompt_tokens: 32`,
/// `duration: 90`), the number as Rust writes it.
pub fn deserialize_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(f64),
        Text(String),
    }
    Ok(match Written::deserialize(deserializer)? {
        Written::Number(number) => number.to_string(),
        Written::Text(text) => text,
    })
}

/// Serializes a duration as whole milliseconds (`1500ms`), which [`parse_duration`] reads back.
pub fn serialize_duration<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", value.as_millis()))
}

/// A latency for people: milliseconds below a second.
pub fn format_seconds(value: Option<f64>) -> String {
    match value {
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1e3),
        Some(v) => format!("{v:.2} s"),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("-1s").is_err());
        for huge in ["1e30s", "1e300h", "366d", "8761h"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
        assert!(
            parse_duration("1e30s")
                .unwrap_err()
                .contains("longer than a year")
        );
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
    }

    #[test]
    fn compound_durations_sum_their_parts_largest_first() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("2m30.5s"),
            Ok(Duration::from_millis(150_500))
        );
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
        for wrong in ["30m1h", "1m1m", "1h 30m", "h", "1x", "1h30", "ms"] {
            assert!(
                parse_duration(wrong)
                    .unwrap_err()
                    .contains("not a duration"),
                "{wrong}"
            );
        }
        assert!(parse_duration("8000h1000h").is_err());
        assert!(
            parse_duration("8760h1m")
                .unwrap_err()
                .contains("longer than a year")
        );
    }

    #[test]
    fn non_negative_numbers() {
        assert_eq!(parse_non_negative(" 2.5 "), Some(2.5));
        assert_eq!(parse_non_negative("0"), Some(0.0));
        assert_eq!(parse_non_negative("-1"), None);
        assert_eq!(parse_non_negative("inf"), None);
        assert_eq!(parse_non_negative("NaN"), None);
        assert_eq!(parse_non_negative("x"), None);
    }
}

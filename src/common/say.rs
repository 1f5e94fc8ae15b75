//! gembatch's own lines on stderr, in one of two forms: text for a terminal (`warning: `
//! and `note: ` before what needs them), or with `--log-format json` one JSON object per
//! line as Cloud Logging reads structured logs (`severity`, `message`, `time`), so GKE files
//! a progress line as INFO, not as the ERROR it makes of any plain stderr line. The
//! `tracing` events of the server and the runner take the same form (see [`JsonEvents`]).

use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain lines.
    #[default]
    Text,
    /// One Cloud Logging structured-log object per line.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets the form of every line of this process; the first call wins.
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// How much a line matters, by Cloud Logging's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Progress.
    Info,
    /// Worth reading: something the run did on its own, or a check it could not make.
    Notice,
    /// Something went wrong, and the run went on.
    Warning,
    /// The command failed.
    Error,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        }
    }

    fn text_prefix(self) -> &'static str {
        match self {
            Severity::Info => "",
            Severity::Notice => "note: ",
            Severity::Warning => "warning: ",
            Severity::Error => "error: ",
        }
    }

    fn of_level(level: tracing::Level) -> Severity {
        match level {
            tracing::Level::ERROR => Severity::Error,
            tracing::Level::WARN => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

/// The line `message` of `severity` is written as, in `format`, without its line end.
pub fn line(format: LogFormat, severity: Severity, message: &str) -> String {
    match format {
        LogFormat::Text => format!("{}{message}", severity.text_prefix()),
        LogFormat::Json => json_line(severity, message, Map::new()),
    }
}

fn json_line(severity: Severity, message: &str, mut fields: Map<String, Value>) -> String {
    let time = jiff::Timestamp::now().to_string();
    fields.insert("severity".into(), severity.name().into());
    fields.insert("message".into(), message.into());
    fields.insert("time".into(), time.into());
    Value::Object(fields).to_string()
}

/// Writes `message` to stderr as a line of `severity`.
pub fn say(severity: Severity, message: impl std::fmt::Display) {
    eprintln!("{}", line(format(), severity, &message.to_string()));
}

/// A progress line.
pub fn info(message: impl std::fmt::Display) {
    say(Severity::Info, message);
}

/// A line worth reading (`note: `).
pub fn notice(message: impl std::fmt::Display) {
    say(Severity::Notice, message);
}

/// Something went wrong and the command goes on (`warning: `).
pub fn warning(message: impl std::fmt::Display) {
    say(Severity::Warning, message);
}

/// Reports a command line clap refused (or `--help`, `--version`) and returns the exit
/// code: as clap prints it, or as one ERROR object when `args` or `GEMBATCH_LOG_FORMAT` ask
/// for `json` (the format itself could not be parsed with the rest).
pub fn usage_error(err: &clap::Error, args: impl IntoIterator<Item = String>) -> u8 {
    let from_env = std::env::var("GEMBATCH_LOG_FORMAT").is_ok_and(|value| value == "json");
    if !err.use_stderr() || !(from_env || json_asked(args)) {
        let _ = err.print();
        return u8::try_from(err.exit_code()).unwrap_or(2);
    }
    let text = err.render().to_string();
    let message = text.trim().trim_start_matches("error: ");
    eprintln!("{}", line(LogFormat::Json, Severity::Error, message));
    2
}

/// Whether a command line asks for `--log-format json` (or `--log-format=json`).
fn json_asked(args: impl IntoIterator<Item = String>) -> bool {
    let mut previous = String::new();
    for arg in args {
        if arg == "--log-format=json" || (previous == "--log-format" && arg == "json") {
            return true;
        }
        previous = arg;
    }
    false
}

/// The `tracing` events as Cloud Logging objects: the event's message, its fields beside
/// it, its target as `logging.googleapis.com/labels.target`.
pub struct JsonEvents;

impl<S, N> FormatEvent<S, N> for JsonEvents
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut rest = fields.others;
        let labels = serde_json::json!({"target": metadata.target()});
        rest.insert("logging.googleapis.com/labels".into(), labels);
        let severity = Severity::of_level(*metadata.level());
        writeln!(writer, "{}", json_line(severity, &fields.message, rest))
    }
}

/// An event's `message` and its other fields.
#[derive(Default)]
struct Fields {
    message: String,
    others: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .insert(field.name().into(), format!("{value:?}").into());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.others.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.insert(field.name().into(), value.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_carry_their_prefix_and_json_lines_their_severity() {
        assert_eq!(
            line(LogFormat::Text, Severity::Info, "rows 3/9"),
            "rows 3/9"
        );
        assert_eq!(
            line(LogFormat::Text, Severity::Warning, "slow"),
            "warning: slow"
        );
        let json: Value =
            serde_json::from_str(&line(LogFormat::Json, Severity::Notice, "a \"b\"")).unwrap();
        assert_eq!(json["severity"], "NOTICE");
        assert_eq!(json["message"], "a \"b\"");
        let time = json["time"].as_str().unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
    }

    #[test]
    fn a_command_line_asks_for_json_in_either_spelling() {
        let asks = |args: &[&str]| json_asked(args.iter().map(|arg| arg.to_string()));
        assert!(asks(&["gembatch", "--log-format", "json", "run", "--bad"]));
        assert!(asks(&["gembatch", "run", "--log-format=json"]));
        assert!(!asks(&["gembatch", "--log-format", "text", "run"]));
        assert!(!asks(&["gembatch", "json"]));
    }
}

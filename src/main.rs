//! Entry point: parse the command line, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use gembatch::cli::Cli;
use gembatch::common::error_text::error_text;
use gembatch::common::say::{self, JsonEvents, LogFormat, Severity};
use gembatch::exit_code::exit_code;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return ExitCode::from(say::usage_error(&err, std::env::args())),
    };
    say::set_format(cli.log_format);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEMBATCH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.event_format(JsonEvents).init(),
    }
    match gembatch::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say::say(Severity::Error, error_text(err.as_ref()));
            ExitCode::from(exit_code(&err, gembatch::shutdown::received_signal()))
        }
    }
}

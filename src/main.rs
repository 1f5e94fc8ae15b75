//! Entry point: parse the command line, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use gembatch::capacity::CapacityError;
use gembatch::capacity::kubernetes::KubeError;
use gembatch::cli::Cli;
use gembatch::dataset::DatasetError;
use gembatch::dispatch::run_dir::RunDirError;
use gembatch::job::JobError;
use gembatch::loadgen::LoadError;
use gembatch::model::ModelError;
use gembatch::report::ReportError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEMBATCH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match gembatch::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The error and its causes, each said once: a cause whose words its parent's message
/// already holds (`cannot read X: No such file`) is not repeated.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let line = cause.to_string();
        if text.contains(&line) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&line);
    }
    text
}

/// 2 for mistakes the user can fix (bad path, file, job, dataset, prompt, flag), 1 for
/// everything else (a failed run, an interruption, an SLO that failed).
fn exit_code(err: &anyhow::Error) -> u8 {
    let user_error = err.chain().any(|cause| {
        cause
            .downcast_ref::<ModelError>()
            .is_some_and(ModelError::is_user_error)
            || cause
                .downcast_ref::<LoadError>()
                .is_some_and(LoadError::is_user_error)
            || cause.is::<DatasetError>()
            || cause
                .downcast_ref::<ReportError>()
                .is_some_and(ReportError::is_user_error)
            || cause.is::<JobError>()
            || cause
                .downcast_ref::<KubeError>()
                .is_some_and(KubeError::is_user_error)
            || cause.is::<RunDirError>()
            || cause
                .downcast_ref::<CapacityError>()
                .is_some_and(CapacityError::is_user_error)
    });
    if user_error {
        gembatch::USER_ERROR_EXIT_CODE
    } else {
        1
    }
}

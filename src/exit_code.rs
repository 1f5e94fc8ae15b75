//! Errors to exit codes, in one place (their words: `common::error_text`): 2 for a mistake
//! the user can fix (a bad path, file, job, dataset, prompt or flag), 128 + the signal for
//! a command a signal stopped (130 for Ctrl-C, 143 for SIGTERM, as a shell reports a
//! process the signal killed), 1 for everything else (a failed run, an SLO that failed).

use std::error::Error;

use crate::capacity::CapacityError;
use crate::capacity::kubernetes::KubeError;
use crate::common::blame::{USER_ERROR_EXIT_CODE, blames_user};
use crate::dataset::DatasetError;
use crate::dispatch::run_dir::RunDirError;
use crate::job::JobError;
use crate::loadgen::LoadError;
use crate::model::ModelError;
use crate::report::ReportError;

/// The error types that may be the user's to fix: those that say so, and those that always
/// are (a dataset, a job file, a run directory).
const USER_ERRORS: [fn(&(dyn Error + 'static)) -> bool; 8] = [
    blames_user::<CapacityError>,
    blames_user::<KubeError>,
    blames_user::<LoadError>,
    blames_user::<ModelError>,
    blames_user::<ReportError>,
    always::<DatasetError>,
    always::<JobError>,
    always::<RunDirError>,
];

/// Whether `cause` is an `E`, an error that is always the user's to fix.
fn always<E: Error + 'static>(cause: &(dyn Error + 'static)) -> bool {
    cause.is::<E>()
}

/// The process's exit code for `err`, which ended a command after `signal` (see
/// `shutdown::received_signal`) or not: 2 when any cause is the user's to fix, 128 +
/// the signal when one stopped it, else 1.
pub fn exit_code(err: &anyhow::Error, signal: Option<i32>) -> u8 {
    let user_error = err
        .chain()
        .any(|cause| USER_ERRORS.iter().any(|blames| blames(cause)));
    let stopped_by = signal.and_then(|signal| u8::try_from(128 + signal).ok());
    match (user_error, stopped_by) {
        (true, _) => USER_ERROR_EXIT_CODE,
        (false, Some(code)) => code,
        (false, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mistakes_exit_2_anywhere_in_the_chain_signals_128_plus_and_failures_1() {
        let job = anyhow::Error::new(JobError::Invalid {
            path: "jobs/x.yaml".into(),
            field: "shard_size".into(),
            message: "must be at least 1 row".into(),
        });
        assert_eq!(exit_code(&job, None), USER_ERROR_EXIT_CODE);
        let job = job.context("cannot start the run");
        assert_eq!(exit_code(&job, None), USER_ERROR_EXIT_CODE);
        assert_eq!(exit_code(&job, Some(libc::SIGINT)), USER_ERROR_EXIT_CODE);
        let slo = anyhow::anyhow!("SLO failed");
        assert_eq!(exit_code(&slo, None), 1);
        let interrupted = anyhow::Error::new(CapacityError::Interrupted);
        assert_eq!(exit_code(&interrupted, Some(libc::SIGINT)), 130);
        assert_eq!(exit_code(&interrupted, Some(libc::SIGTERM)), 143);
    }
}

//! Errors to exit codes, in one place (their words: `common::error_text`): 2 for a mistake
//! the user can fix (a bad path, file, job, dataset, prompt or flag), 1 for everything else
//! (a failed run, an interruption, an SLO that failed).

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

/// The process's exit code for `err`: 2 when any cause is the user's to fix, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let user_error = err
        .chain()
        .any(|cause| USER_ERRORS.iter().any(|blames| blames(cause)));
    if user_error { USER_ERROR_EXIT_CODE } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mistakes_exit_2_anywhere_in_the_chain_and_failures_exit_1() {
        let job = anyhow::Error::new(JobError::Invalid {
            path: "jobs/x.yaml".into(),
            field: "shard_size".into(),
            message: "must be at least 1 row".into(),
        });
        assert_eq!(exit_code(&job), USER_ERROR_EXIT_CODE);
        assert_eq!(
            exit_code(&job.context("cannot start the run")),
            USER_ERROR_EXIT_CODE
        );
        let failed = anyhow::Error::new(CapacityError::Interrupted);
        assert_eq!(exit_code(&failed), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("SLO failed")), 1);
    }
}

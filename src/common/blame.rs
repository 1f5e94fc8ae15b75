//! Whose mistake an error is: the user's to fix (a bad path, file, job, dataset, prompt or
//! flag: exit 2) or a failure of the run (exit 1). Every error type that can be either says
//! so here, and the binary maps the chain of causes to an exit code in one place.

/// The exit status of a mistake the user can fix; other failures exit with 1.
pub const USER_ERROR_EXIT_CODE: u8 = 2;

/// An error that says whether the user can fix it.
pub trait Blame: std::error::Error + 'static {
    /// Whether the user caused it and can fix it (exit code 2).
    fn is_user_error(&self) -> bool;
}

/// Whether `cause` is an `E` that is the user's to fix.
pub fn blames_user<E: Blame>(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<E>().is_some_and(E::is_user_error)
}

//! One runner per run directory: an advisory lock (`flock`) on `run.lock`, held for the
//! whole run and dropped by the kernel when the process ends however it ends, so a crashed
//! runner never leaves a stale lock. The file names the holder, for the runner refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::run_dir::RunDirError;

/// File name of the lock, in the run directory.
pub const LOCK_FILE: &str = "run.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    /// Held open: closing the file releases the lock.
    _file: Option<File>,
}

impl RunLock {
    /// Takes the lock of the run in `dir`, or says which process holds it. On a file
    /// system without locks (some network and FUSE mounts) it warns through `warn` and goes
    /// on unlocked: refusing would make such outputs unusable.
    pub fn acquire(dir: &Path, warn: impl FnOnce(String)) -> Result<RunLock, RunDirError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| RunDirError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RunDirError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(err)) if err.kind() == std::io::ErrorKind::Unsupported => {
                warn(format!(
                    "{} cannot be locked ({err}): nothing stops a second runner on this run",
                    path.display()
                ));
                return Ok(RunLock { _file: None });
            }
            Err(TryLockError::Error(err)) => return Err(io(err)),
        }
        write_holder(&mut file).map_err(io)?;
        Ok(RunLock { _file: Some(file) })
    }
}

/// Says who holds the lock: this process's id, host and start, read by a runner refused.
fn write_holder(file: &mut File) -> std::io::Result<()> {
    let holder = format!(
        "{}, since {}",
        crate::common::host::this_process(),
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(holder.as_bytes())?;
    file.sync_data()
}

/// What the holder wrote, or why it cannot be said.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.read_to_string(&mut text) {
        Ok(_) if !text.trim().is_empty() => text.trim().chars().take(200).collect(),
        _ => "a process that has not said who it is yet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), |_| panic!("no warning")).unwrap();
        let err = RunLock::acquire(dir.path(), |_| panic!("no warning")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RunDirError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        RunLock::acquire(dir.path(), |_| panic!("no warning")).unwrap();
        assert!(dir.path().join(LOCK_FILE).exists());
    }
}

//! Temporary folders that a killed process leaves behind only until the next one starts.
//! A folder removes itself when dropped, but SIGKILL, the OOM killer or a lost node give it
//! no chance (a bucket dataset's local copy can be gigabytes, the model's download 250 MB).
//! So each folder holds an advisory lock (`flock`) on its lock file for its whole life, which
//! the kernel drops when the process ends however it ends, and creating a folder first
//! removes every sibling of the same prefix whose lock nobody holds.
//!
//! The lock file appears only once locked (locked under another name, then renamed), so a
//! folder being created is never taken for a stale one. Folders without a lock file (older
//! gembatch versions, file systems without locks) are left alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::say;

/// The lock file in every scratch folder.
const LOCK_FILE: &str = ".gembatch-scratch.lock";
/// Its name while it is being locked.
const LOCKING_FILE: &str = ".gembatch-scratch.locking";

/// A temporary folder, removed when dropped or by the next [`Scratch::new`] after its
/// process died.
#[derive(Debug)]
pub struct Scratch {
    /// Removed when dropped, lock file included (fields drop in order: the lock last).
    dir: tempfile::TempDir,
    /// Held open: closing it (or the process ending) lets a later sweep remove the folder.
    _lock: Option<File>,
}

impl Scratch {
    /// A new folder `PREFIX...` in the system's temporary directory (`$TMPDIR`), after
    /// removing the stale ones of that prefix there.
    pub fn new(prefix: &str) -> io::Result<Scratch> {
        Scratch::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new folder `PREFIX...` in `parent`, after removing the stale ones of that prefix.
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<Scratch> {
        for stale in remove_stale(parent, prefix) {
            say::info(format!(
                "removed {}, left by a gembatch process that ended without cleaning up",
                stale.display()
            ));
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let lock = lock_folder(dir.path())?;
        Ok(Scratch { dir, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Locks `dir`'s lock file under a name no sweep reads, then gives it its name. `None`
/// where the file system has no locks: the folder then is never swept.
fn lock_folder(dir: &Path) -> io::Result<Option<File>> {
    let locking = dir.join(LOCKING_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&locking)?;
    if file.try_lock().is_err() {
        // No locks on this file system (some network mounts): a sweep's lock would say
        // nothing either, so the folder goes unlocked and is never swept.
        std::fs::remove_file(&locking)?;
        return Ok(None);
    }
    std::fs::rename(&locking, dir.join(LOCK_FILE))?;
    Ok(Some(file))
}

/// Removes the folders `PREFIX...` in `parent` whose lock file nobody holds, and returns
/// them. Best effort: a folder that cannot be read or removed stays, silently, as it would
/// without the sweep.
fn remove_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .filter(|dir| remove_if_unlocked(dir))
        .collect()
}

/// Removes `dir` if its lock file exists and can be locked: its process has ended.
fn remove_if_unlocked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    // Another sweep may have removed it between our open and our lock.
    std::fs::remove_dir_all(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use std::fs::TryLockError;

    use super::*;

    fn names(parent: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_folder_is_locked_while_held_and_removed_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::new_in(parent.path(), "gembatch-x-").unwrap();
        let lock = scratch.path().join(LOCK_FILE);
        assert!(lock.is_file());
        assert!(!scratch.path().join(LOCKING_FILE).exists());
        let other = File::open(&lock).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn only_unheld_folders_of_the_prefix_with_a_lock_file_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let held = Scratch::new_in(parent.path(), "gembatch-x-").unwrap();
        // What a killed process leaves: the lock file, nobody holding it.
        let dead = parent.path().join("gembatch-x-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), "").unwrap();
        std::fs::write(dead.join("requests.jsonl"), "{}\n").unwrap();
        // Not ours to judge: no lock file (mid-creation, or an older version), or another
        // prefix, or a plain file.
        let unlocked = parent.path().join("gembatch-x-nolock");
        std::fs::create_dir(&unlocked).unwrap();
        std::fs::write(unlocked.join(LOCKING_FILE), "").unwrap();
        let other = parent.path().join("gembatch-y-dead");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(LOCK_FILE), "").unwrap();
        std::fs::write(parent.path().join("gembatch-x-file"), "").unwrap();

        let fresh = Scratch::new_in(parent.path(), "gembatch-x-").unwrap();
        assert!(!dead.exists(), "the dead process's folder is removed");
        let mut kept = vec![
            "gembatch-x-file".to_string(),
            "gembatch-x-nolock".into(),
            "gembatch-y-dead".into(),
            file_name(held.path()),
            file_name(fresh.path()),
        ];
        kept.sort();
        assert_eq!(names(parent.path()), kept);
    }

    fn file_name(path: &Path) -> String {
        path.file_name().unwrap().to_string_lossy().into_owned()
    }
}

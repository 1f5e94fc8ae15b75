//! Files that survive a crash whole or not at all: written beside their name, made
//! durable (fsync), then renamed over it, the rename itself made durable; and result
//! directories that others cannot read.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that after a crash `path` holds the old content or the new,
/// never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = partial_path(path);
    let mut file = File::create(&partial)?;
    file.write_all(bytes)?;
    commit(file, &partial, path)
}

/// Where `path` is written until it is committed: `path` + `.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Puts `file`, written in full at `partial`, at `path` for good: its bytes made durable
/// (fsync), then the rename, then the rename itself (fsync of the folder).
pub fn commit(file: File, partial: &Path, path: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    drop(file);
    std::fs::rename(partial, path)?;
    sync_parent(path)
}

/// Creates `dir` and its missing parents readable by owner and group only (`0750`, less
/// what the umask takes): results hold rows that may be private.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Makes a rename or a new file in `path`'s folder durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.json"]);
    }

    #[test]
    fn result_directories_are_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("results").join("load-1");
        create_private_dir_all(&deep).unwrap();
        for made in [&deep, &dir.path().join("results")] {
            let mode = std::fs::metadata(made).unwrap().permissions().mode();
            assert_eq!(mode & 0o007, 0, "{}: {mode:o}", made.display());
        }
        create_private_dir_all(&deep).unwrap();
    }
}

//! Which file system a path is on, from `/proc/self/mountinfo`. A run's results rest on
//! fsync and rename (see `durable`); a bucket mounted through FUSE (Cloud Storage FUSE,
//! s3fs) keeps neither promise: gcsfuse documents that fsync does not finalize an object
//! written in streaming mode and that an edit re-uploads the whole object.

use std::path::{Path, PathBuf};

/// The FUSE file system type (`fuse.gcsfuse`, `fuse`) `path` is on, if it is on one; `None`
/// off Linux or when the mount table cannot be read. A path that does not exist yet is
/// judged by its nearest existing ancestor.
pub fn fuse_file_system(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let existing = path.ancestors().find(|p| p.exists())?;
    let absolute = std::fs::canonicalize(existing).ok()?;
    let fs_type = file_system_of(&mountinfo, &absolute)?;
    fs_type.starts_with("fuse").then_some(fs_type)
}

/// The type of the file system `path` (absolute, canonical) is on: the mount with the
/// longest mount point that holds it.
fn file_system_of(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(mount_line)
        .filter(|(mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(mount_point, _)| mount_point.components().count())
        .map(|(_, fs_type)| fs_type)
}

/// A mountinfo line's mount point (field 5, octal escapes undone) and file system type
/// (the field after the `-` separator).
fn mount_line(line: &str) -> Option<(PathBuf, String)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = unescape(fields.get(4)?);
    let separator = fields.iter().position(|field| *field == "-")?;
    let fs_type = fields.get(separator + 1)?.to_string();
    Some((PathBuf::from(mount_point), fs_type))
}

/// Undoes mountinfo's `\\NNN` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|digits| u8::from_str_radix(digits, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
41 22 0:40 / /mnt/gcs rw,nosuid,nodev,relatime shared:20 - fuse.gcsfuse nightly-bucket rw,user_id=0
42 41 8:2 / /mnt/gcs/local\\040disk rw,relatime - ext4 /dev/sdb rw
43 22 0:41 / /mnt/s3 rw - fuse s3fs rw
";

    #[test]
    fn the_longest_mount_point_holding_the_path_decides() {
        let of = |path: &str| file_system_of(MOUNTINFO, Path::new(path));
        assert_eq!(of("/home/me/results").as_deref(), Some("ext4"));
        assert_eq!(
            of("/mnt/gcs/results/run-1").as_deref(),
            Some("fuse.gcsfuse")
        );
        assert_eq!(of("/mnt/gcs/local disk/results").as_deref(), Some("ext4"));
        assert_eq!(of("/mnt/s3/x").as_deref(), Some("fuse"));
        assert_eq!(
            of("/mnt/gcsx").as_deref(),
            Some("ext4"),
            "a prefix is not a parent"
        );
    }

    #[test]
    fn a_local_path_is_not_fuse() {
        let dir = tempfile::tempdir().unwrap();
        let fs_type = fuse_file_system(&dir.path().join("not-yet/results"));
        assert!(fs_type.is_none(), "{fs_type:?}");
    }
}

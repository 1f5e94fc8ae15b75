//! How many CPU threads the model uses: the container's CPU quota (a pod's limit) when
//! there is one, else the CPUs this process may run on; overridable.

use std::path::Path;

/// Threads to use: `requested` if given, else the cgroup CPU quota rounded up, capped by
/// the CPUs in this process's affinity mask.
pub fn effective_threads(requested: Option<usize>) -> usize {
    if let Some(n) = requested.filter(|&n| n > 0) {
        return n;
    }
    let available = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cgroup_cpu_limit(Path::new("/sys/fs/cgroup"))
        .map_or(available, |quota| quota.min(available))
        .max(1)
}

/// Sets the thread count of candle's CPU kernels. Call once, before any model work and
/// before other threads start (it writes process environment variables).
pub fn configure(requested: Option<usize>) -> usize {
    let n = effective_threads(requested);
    // SAFETY: called at start-up from the main thread before any other thread exists or
    // reads the environment; candle reads these variables when its pools first start.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    n
}

/// CPU limit of the cgroup (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), rounded up.
fn cgroup_cpu_limit(root: &Path) -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string(root.join("cpu.max")) {
        return parse_quota(
            text.split_whitespace().next()?,
            text.split_whitespace().nth(1)?,
        );
    }
    let quota = std::fs::read_to_string(root.join("cpu/cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(root.join("cpu/cpu.cfs_period_us")).ok()?;
    parse_quota(quota.trim(), period.trim())
}

fn parse_quota(quota: &str, period: &str) -> Option<usize> {
    let quota: f64 = quota.parse().ok().filter(|q: &f64| *q > 0.0)?;
    let period: f64 = period.parse().ok().filter(|p: &f64| *p > 0.0)?;
    Some((quota / period).ceil() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cgroup_v2_quota_and_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.max"), "250000 100000\n").unwrap();
        assert_eq!(cgroup_cpu_limit(dir.path()), Some(3));
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cgroup_cpu_limit(dir.path()), None);
    }

    #[test]
    fn reads_cgroup_v1_quota() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cpu")).unwrap();
        std::fs::write(dir.path().join("cpu/cpu.cfs_quota_us"), "400000\n").unwrap();
        std::fs::write(dir.path().join("cpu/cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(cgroup_cpu_limit(dir.path()), Some(4));
    }

    #[test]
    fn explicit_request_wins() {
        assert_eq!(effective_threads(Some(3)), 3);
        assert!(effective_threads(None) >= 1);
    }
}

//! This machine's name, or its pod's: what a replica calls itself and what a lock holder
//! is named by.

/// `$POD_NAME`, else `$HOSTNAME`, else the kernel's host name.
pub fn host_name() -> Option<String> {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
}

/// This process as a lock's holder is named: `pid 4242 on HOST`.
pub fn this_process() -> String {
    format!(
        "pid {} on {}",
        std::process::id(),
        host_name().unwrap_or_else(|| "an unnamed host".into())
    )
}

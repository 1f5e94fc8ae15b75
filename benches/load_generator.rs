//! The load generator must never be the bottleneck: gembatch load against oha and locust,
//! side by side in one run, against the same trivial loopback OpenAI endpoint.
//!
//!     cargo install oha && pip install locust
//!     cargo bench --bench load_generator -- [--seconds 10] [--users 32] [--soak-seconds 600]
//!
//! Each tool runs closed loop with the same number of connections for the same time;
//! printed: requests/s, CPU seconds per 1,000 requests (the tool's own user + system time,
//! from wait4), and gembatch's ratio to each. `--soak-seconds` then runs gembatch load at a
//! fixed rate for that long and samples its resident memory, which must stay flat
//! (per-request rows stream to Parquet).

#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{flag, start_stub, wait_with_cpu};

const BODY: &str = r#"{"model":"stub-model","prompt":"hello","max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}"#;
/// What one tool did.
struct Measured {
    requests: f64,
    wall: f64,
    cpu: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests / self.wall
    }

    /// CPU milliseconds per 1,000 requests.
    fn cpu_per_thousand(&self) -> f64 {
        self.cpu / self.requests * 1_000_000.0
    }
}

fn gembatch(url: &str, users: u32, seconds: u64, dir: &std::path::Path) -> Measured {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "load",
            "--url",
            url,
            "--run-id",
            "bench",
            "--users",
            &users.to_string(),
        ])
        .args(["--duration", &format!("{seconds}s"), "--out"])
        .arg(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start gembatch load");
    let (wall, cpu, success) = wait_with_cpu(child, started);
    assert!(success, "gembatch load failed");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
            .expect("json");
    let requests = summary["requests"].as_f64().expect("requests");
    // Wall time of the load itself: the process also starts up and writes its report.
    let load_wall = (seconds as f64).min(wall);
    Measured {
        requests,
        wall: load_wall,
        cpu,
    }
}

fn oha(url: &str, users: u32, seconds: u64) -> Option<Measured> {
    let started = Instant::now();
    let child = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{seconds}s"),
            "-c",
            &users.to_string(),
        ])
        .args([
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            BODY,
        ])
        .arg(format!("{url}/v1/completions"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut child = child;
    let mut text = String::new();
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    let (wall, cpu, success) = wait_with_cpu(child, started);
    if !success {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let requests: f64 = json["statusCodeDistribution"]
        .as_object()?
        .values()
        .filter_map(|v| v.as_f64())
        .sum();
    Some(Measured {
        requests,
        wall: (seconds as f64).min(wall),
        cpu,
    })
}

fn locust(url: &str, users: u32, seconds: u64, dir: &std::path::Path) -> Option<Measured> {
    let locustfile = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/locustfile.py");
    let prefix = dir.join("locust");
    let started = Instant::now();
    let child = Command::new("locust")
        .args([
            "-f",
            locustfile,
            "--headless",
            "-u",
            &users.to_string(),
            "-r",
            &users.to_string(),
        ])
        .args([
            "-t",
            &format!("{seconds}s"),
            "--host",
            url,
            "--only-summary",
            "--csv",
        ])
        .arg(&prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (wall, cpu, _) = wait_with_cpu(child, started);
    let stats = std::fs::read_to_string(format!("{}_stats.csv", prefix.display())).ok()?;
    let aggregated = stats.lines().find(|line| line.contains("Aggregated"))?;
    let requests: f64 = aggregated.split(',').nth(2)?.parse().ok()?;
    Some(Measured {
        requests,
        wall: (seconds as f64).min(wall),
        cpu,
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn soak(url: &str, seconds: u64, dir: &std::path::Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "load",
            "--url",
            url,
            "--run-id",
            "soak",
            "--rate",
            "500",
            "--duration",
            &format!("{seconds}s"),
            "--out",
        ])
        .arg(dir.join("soak"))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start gembatch load");
    let started = Instant::now();
    let mut samples = Vec::new();
    while child.try_wait().expect("wait").is_none() {
        if let Some(rss) = rss_mib(child.id()) {
            samples.push((started.elapsed().as_secs_f64(), rss));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let summary = std::fs::read_to_string(dir.join("soak/summary.json")).unwrap_or_default();
    let requests = serde_json::from_str::<serde_json::Value>(&summary)
        .ok()
        .and_then(|v| v["requests"].as_u64())
        .unwrap_or(0);
    println!(
        "\nsoak: gembatch load --rate 500 for {seconds} s, {requests} requests; resident memory (MiB):"
    );
    let step = (samples.len() / 10).max(1);
    for (t, rss) in samples.iter().step_by(step) {
        println!("  t={t:>5.0} s  {rss:>6.1}");
    }
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        println!(
            "  after 5 s {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB",
            first.1, last.1, max
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = flag(&args, "--seconds", 10);
    let users = flag(&args, "--users", 32) as u32;
    let soak_seconds = flag(&args, "--soak-seconds", 0);
    let (_runtime, addr) = start_stub();
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().expect("temp dir");

    let ours = gembatch(&url, users, seconds, dir.path());
    let peers = [
        ("oha", oha(&url, users, seconds)),
        (
            "locust (FastHttpUser)",
            locust(&url, users, seconds, dir.path()),
        ),
    ];
    println!(
        "{users} connections, {seconds} s each, same loopback endpoint (one-token SSE completion):\n"
    );
    println!("| tool | requests/s | CPU ms per 1,000 requests | gembatch / tool (requests/s) |");
    println!("|---|---|---|---|");
    println!(
        "| gembatch load | {:.0} | {:.2} | |",
        ours.rate(),
        ours.cpu_per_thousand()
    );
    for (name, measured) in peers {
        match measured {
            Some(m) => println!(
                "| {name} | {:.0} | {:.2} | {:.2}x |",
                m.rate(),
                m.cpu_per_thousand(),
                ours.rate() / m.rate()
            ),
            None => println!("| {name} | not installed or failed | | |"),
        }
    }
    if soak_seconds > 0 {
        soak(&url, soak_seconds, dir.path());
    }
}

//! The load generator must never be the bottleneck: gembatch load against oha and locust,
//! side by side in one run, against the same trivial loopback OpenAI endpoint; twice, on a
//! raw HTTP/1.1 endpoint that costs as little as HTTP allows (the endpoint shares the cores
//! with the tool, so this one shows the tools most) and on an axum one.
//!
//!     cargo install oha && pip install locust
//!     cargo bench --bench load_generator -- [--seconds 10] [--users 32] [--rounds 3] [--soak-seconds 600]
//!
//! Each tool runs closed loop with the same number of connections for the same time, sending
//! the same request (gembatch reads it from a one-row dataset), in rounds: gembatch, oha,
//! locust, again. Printed per tool: median requests/s, median CPU milliseconds per 1,000
//! requests (the tool's own user + system time, from wait4), and gembatch's ratio to each.
//! `--soak-seconds` then runs gembatch load at a fixed rate for that long and samples its
//! resident memory, which must stay flat (per-request rows stream to Parquet).

#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::raw_stub::start_raw_stub;
use support::{flag, start_stub, wait_with_cpu};

const BODY: &str = r#"{"model":"stub-model","prompt":"hello","max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}"#;
/// What one tool did.
#[derive(Clone)]
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
    // The same request the other tools send: a one-row dataset, cycled.
    let dataset = dir.join("hello.jsonl");
    std::fs::write(&dataset, "{\"prompt\":\"hello\",\"max_tokens\":1}\n").expect("dataset");
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
        .args(["--duration", &format!("{seconds}s"), "--dataset"])
        .arg(&dataset)
        .arg("--out")
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

/// The middle value (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the three tools `rounds` times in turn against the endpoint at `url` (so drift in
/// the machine hits them alike) and prints their medians and gembatch's ratio to each:
/// the ratio of the medians, and the lowest and highest ratio within one round.
fn compare(endpoint: &str, url: &str, options: &Options, dir: &std::path::Path) {
    let Options {
        users,
        seconds,
        rounds,
        ..
    } = *options;
    let tools = ["gembatch load", "oha", "locust (FastHttpUser)"];
    let mut runs: Vec<Vec<Option<Measured>>> = vec![Vec::new(); tools.len()];
    for _ in 0..rounds {
        runs[0].push(Some(gembatch(url, users, seconds, dir)));
        runs[1].push(oha(url, users, seconds));
        runs[2].push(locust(url, users, seconds, dir));
    }
    println!(
        "\n{endpoint}: {users} connections, {seconds} s per run, {rounds} rounds (one-token SSE completion):\n"
    );
    println!(
        "| tool | requests/s (median) | CPU ms per 1,000 requests (median) | gembatch / tool: ratio of medians (lowest-highest round) |"
    );
    println!("|---|---|---|---|");
    let ours: Vec<f64> = runs[0].iter().flatten().map(Measured::rate).collect();
    for (name, measured) in tools.iter().zip(&runs) {
        let done: Vec<&Measured> = measured.iter().flatten().collect();
        if done.is_empty() {
            println!("| {name} | not installed or failed | | |");
            continue;
        }
        let rate = median(done.iter().map(|m| m.rate()).collect());
        let cpu = median(done.iter().map(|m| m.cpu_per_thousand()).collect());
        let ratio = if *name == tools[0] {
            String::new()
        } else {
            let per_round: Vec<f64> = measured
                .iter()
                .zip(&ours)
                .filter_map(|(theirs, ours)| Some(ours / theirs.as_ref()?.rate()))
                .collect();
            let low = per_round.iter().copied().fold(f64::INFINITY, f64::min);
            let high = per_round.iter().copied().fold(0.0, f64::max);
            format!("{:.2}x ({low:.2}-{high:.2}x)", median(ours.clone()) / rate)
        };
        println!("| {name} | {rate:.0} | {cpu:.2} | {ratio} |");
    }
}

/// The benchmark's flags.
#[derive(Clone, Copy)]
struct Options {
    users: u32,
    seconds: u64,
    rounds: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let options = Options {
        seconds: flag(&args, "--seconds", 10),
        users: flag(&args, "--users", 32) as u32,
        rounds: flag(&args, "--rounds", 3).max(1),
    };
    let soak_seconds = flag(&args, "--soak-seconds", 0);
    let dir = tempfile::tempdir().expect("temp dir");
    let (raw_runtime, raw) = start_raw_stub();
    compare(
        "raw HTTP/1.1 endpoint",
        &format!("http://{raw}"),
        &options,
        dir.path(),
    );
    drop(raw_runtime);
    let (axum_runtime, axum) = start_stub();
    compare(
        "axum endpoint",
        &format!("http://{axum}"),
        &options,
        dir.path(),
    );
    if soak_seconds > 0 {
        soak(&format!("http://{axum}"), soak_seconds, dir.path());
    }
    drop(axum_runtime);
}

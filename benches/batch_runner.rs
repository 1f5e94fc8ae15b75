//! The batch runner, measured: how throughput scales from one local pod to two, and what the
//! runner itself costs per row against an endpoint that answers at once.
//!
//!     cargo bench --bench batch_runner -- [--rows 48] [--tokens 48] [--overhead-rows 100000]
//!         [--big-rows 1000000] [--skip-scaling] [--skip-overhead]
//!
//! Scaling: the same dataset (every row asks for exactly `--tokens` tokens) with 1 and with 2
//! local `gembatch serve` pods, one thread each; printed: rows/s and output tokens/s from
//! `summary.parquet` (first send to last finish) and the ratio (target >= 1.8).
//!
//! Overhead: `--overhead-rows` and `--big-rows` rows against a loopback endpoint answering at
//! once; printed: the runner's own CPU seconds per 100,000 rows and its peak resident memory
//! (from wait4), which must stay flat in the number of rows (< 200 MB at 1,000,000).

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use gembatch::results::table::Table;
use support::{Usage, flag, start_stub, wait_with_usage};

/// Writes `rows` rows asking for exactly `tokens` tokens each.
fn dataset(dir: &Path, rows: u64, tokens: u64) -> PathBuf {
    let path = dir.join(format!("rows-{rows}.jsonl"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("dataset"));
    const TOPICS: [&str; 8] = [
        "the ocean",
        "a lighthouse",
        "the history of bread",
        "mountain weather",
        "a small robot",
        "the night sky",
        "an old library",
        "city traffic",
    ];
    for i in 0..rows {
        writeln!(
            file,
            "{{\"id\": \"row-{i}\", \"prompt\": \"Write a short paragraph about {} (variation {i}).\", \"max_tokens\": {tokens}, \"ignore_eos\": true}}",
            TOPICS[(i % 8) as usize]
        )
        .expect("write dataset");
    }
    file.flush().expect("flush dataset");
    path
}

fn job(dir: &Path, dataset: &Path, extra: &str) -> PathBuf {
    let path = dir.join("job.yaml");
    std::fs::write(
        &path,
        format!(
            "name: bench\ndataset: {{path: {}}}\noutput: {}\n{extra}\n",
            dataset.display(),
            dir.join("results").display()
        ),
    )
    .expect("job file");
    path
}

/// Runs `gembatch run JOB ARGS` and returns its resource use and the run's summary row.
fn run(job: &Path, args: &[&str], dir: &Path, run_id: &str) -> (Usage, Summary) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .arg("run")
        .arg(job)
        .args(["--run-id", run_id])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gembatch run");
    let usage = wait_with_usage(child, started);
    assert!(usage.success, "gembatch run {run_id} failed");
    let summary = Table::read(&dir.join("results").join(run_id).join("summary.parquet"))
        .expect("summary.parquet");
    let first = |column: &str| summary.f64s(column).expect(column)[0].unwrap_or(0.0);
    let rows = summary.u64s("rows").expect("rows")[0].unwrap_or(0);
    let summary = Summary {
        rows,
        duration_s: first("duration_s"),
        rows_per_s: first("requests_per_s"),
        tokens_per_s: first("output_tokens_per_s"),
    };
    (usage, summary)
}

struct Summary {
    rows: u64,
    duration_s: f64,
    rows_per_s: f64,
    tokens_per_s: f64,
}

fn scaling(dir: &Path, rows: u64, tokens: u64) {
    let dataset = dataset(dir, rows, tokens);
    println!(
        "scaling: {rows} rows x {tokens} output tokens, local pods of 1 thread, 8 rows in flight per pod"
    );
    println!("  pods   rows/s   output tok/s   batch s   wall s");
    let mut rates = Vec::new();
    for pods in [1u32, 2] {
        let job = job(
            dir,
            &dataset,
            &format!(
                "capacity: {{backend: local, gpus: {pods}, threads_per_pod: 1}}\nshard_size: 8\nconcurrency_per_pod: 8"
            ),
        );
        let (usage, summary) = run(&job, &[], dir, &format!("scaling-{pods}"));
        assert_eq!(summary.rows, rows);
        println!(
            "  {pods:>4}   {:>6.2}   {:>12.1}   {:>7.1}   {:>6.1}",
            summary.rows_per_s, summary.tokens_per_s, summary.duration_s, usage.wall
        );
        rates.push(summary.tokens_per_s);
    }
    println!(
        "  2 pods / 1 pod: {:.2}x output tokens/s (target >= 1.8x)\n",
        rates[1] / rates[0]
    );
}

fn overhead(dir: &Path, sizes: &[u64]) {
    let (_runtime, addr) = start_stub();
    let url = format!("http://{addr}");
    println!(
        "overhead: the runner against a loopback endpoint that answers at once (1 endpoint, 64 in flight)"
    );
    println!("       rows   wall s    rows/s   runner CPU s   CPU s / 100k rows   peak RSS MiB");
    for &rows in sizes {
        let dataset = dataset(dir, rows, 1);
        let job = job(dir, &dataset, "shard_size: 1000\nconcurrency_per_pod: 64");
        let (usage, summary) = run(
            &job,
            &["--endpoints", &url],
            dir,
            &format!("overhead-{rows}"),
        );
        assert_eq!(summary.rows, rows);
        println!(
            "  {rows:>9}   {:>6.1}   {:>7.0}   {:>12.1}   {:>17.2}   {:>12.1}",
            usage.wall,
            rows as f64 / usage.wall,
            usage.cpu,
            usage.cpu / rows as f64 * 1e5,
            usage.peak_rss_mib
        );
        let _ = std::fs::remove_dir_all(dir.join("results").join(format!("overhead-{rows}")));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    if !args.iter().any(|a| a == "--skip-scaling") {
        scaling(
            dir.path(),
            flag(&args, "--rows", 48),
            flag(&args, "--tokens", 48),
        );
    }
    if !args.iter().any(|a| a == "--skip-overhead") {
        let sizes = [
            flag(&args, "--overhead-rows", 100_000),
            flag(&args, "--big-rows", 1_000_000),
        ];
        overhead(dir.path(), &sizes);
    }
}

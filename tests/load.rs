//! `gembatch load` end to end: the real binary against in-process stub servers whose delays
//! and failures are programmed exactly, so every figure it writes can be checked.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::stub::{Behaviour, Stub};
use gembatch::loadgen::stats::{Latency, Stat, StepRow};
use gembatch::results::load::read_steps;
use gembatch::results::table::Table;

const MS: Duration = Duration::from_millis(1);

/// The tests measure time: one at a time, so they do not slow each other down.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `gembatch load --url URL --out DIR ARGS...`.
fn load(url: &str, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["load", "--url", url, "--out"])
        .arg(out)
        .args(["--run-id", "test"])
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run gembatch load")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        stderr(output)
    );
}

/// Asserts `measured` is within 1 ms or 2 % (whichever is larger) of `expected` seconds.
fn assert_close(what: &str, measured: Option<f64>, expected: f64) {
    let measured = measured.unwrap_or_else(|| panic!("{what}: no value"));
    let tolerance = (expected * 0.02).max(0.001);
    assert!(
        (measured - expected).abs() <= tolerance,
        "{what}: measured {measured:.6} s, programmed {expected:.6} s (tolerance {tolerance:.6})"
    );
}

fn outcomes(dir: &Path) -> Vec<String> {
    Table::read(&dir.join("requests.parquet"))
        .unwrap()
        .strs("outcome")
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

fn count(row: &StepRow, class: &str) -> u64 {
    let index = gembatch::loadgen::record::Outcome::ALL
        .iter()
        .position(|o| o.as_str() == class)
        .unwrap();
    row.counts[index]
}

#[test]
fn measured_latencies_match_the_programmed_delays() {
    let _serial = serial();
    // Delays long enough that the allowed 2 % is above this shared 2-core machine's
    // scheduling noise (a millisecond now and then).
    let ttft = 300 * MS;
    let gap = 200 * MS;
    let tokens = 4;
    let stub = Stub::start(move |_| Behaviour::Stream {
        ttft,
        gap,
        tokens,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let output = load(&stub.url, dir.path(), &["--users", "4", "--duration", "4s"]);
    assert_success(&output);
    let steps = read_steps(dir.path()).unwrap();
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    assert!(step.requests >= 16, "{} requests", step.requests);
    assert_eq!(count(step, "ok"), step.requests);
    for stat in [Stat::P50, Stat::P95, Stat::P99, Stat::Mean] {
        let name = stat.as_str();
        assert_close(
            &format!("{name} ttft"),
            step.latency(Latency::Ttft, stat),
            0.300,
        );
        assert_close(
            &format!("{name} itl"),
            step.latency(Latency::Itl, stat),
            0.200,
        );
        assert_close(
            &format!("{name} tpot"),
            step.latency(Latency::Tpot, stat),
            0.200,
        );
        assert_close(
            &format!("{name} e2e"),
            step.latency(Latency::E2e, stat),
            0.900,
        );
    }
    // Closed loop: a user sends when its last request ended, so nothing waits.
    assert_close(
        "p99 e2e corrected",
        step.latency(Latency::E2eCorrected, Stat::P99),
        0.900,
    );
    // 4 users each finishing one request every 0.9 s.
    let expected_rps = 4.0 / 0.900;
    assert!(
        (step.ok_rate - expected_rps).abs() / expected_rps < 0.1,
        "{} req/s",
        step.ok_rate
    );
    assert!(
        (step.mean_concurrency - 4.0).abs() < 0.3,
        "{} in flight",
        step.mean_concurrency
    );

    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    assert_eq!(table.len() as u64, step.requests);
    assert!(
        table
            .u32s("output_tokens")
            .unwrap()
            .iter()
            .all(|&t| t == Some(tokens))
    );
    assert!(
        table
            .u32s("prompt_tokens")
            .unwrap()
            .iter()
            .all(|&t| t == Some(7))
    );
    assert!(
        table
            .strs("token_source")
            .unwrap()
            .iter()
            .all(|s| s.as_deref() == Some("usage"))
    );
    let replicas = table.strs("replica").unwrap();
    assert!(replicas.iter().any(|r| r.as_deref() == Some("stub-0")));
    assert!(replicas.iter().any(|r| r.as_deref() == Some("stub-1")));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["model"], "stub-model");
    assert_eq!(summary["shape"], "sustained");
    assert!(dir.path().join("results_viewer.html").exists());
}

#[test]
fn every_outcome_class_is_counted_exactly() {
    let _serial = serial();
    let ok = Behaviour::Stream {
        ttft: 5 * MS,
        gap: MS,
        tokens: 3,
        usage: true,
    };
    let script = [
        ok,
        Behaviour::Status(500),
        Behaviour::Status(429),
        Behaviour::Status(400),
        Behaviour::Cut { tokens: 2 },
        Behaviour::Empty,
        Behaviour::Stall(Duration::from_secs(3)),
    ];
    let stub = Stub::start(move |n| script[n as usize % script.len()]);
    let dir = tempfile::tempdir().unwrap();
    // One user, 14 requests in order: every behaviour exactly twice.
    let output = load(
        &stub.url,
        dir.path(),
        &[
            "--max-users",
            "1",
            "--step-size",
            "1",
            "--requests-per-user",
            "14",
            "--timeout",
            "1s",
        ],
    );
    assert_success(&output);
    let step = &read_steps(dir.path()).unwrap()[0];
    assert_eq!(step.requests, 14);
    for class in [
        "ok",
        "http_5xx",
        "http_429",
        "http_4xx",
        "stream_broken",
        "empty_completion",
        "timeout",
    ] {
        assert_eq!(count(step, class), 2, "{class}: {:?}", outcomes(dir.path()));
    }
    assert_eq!(count(step, "connect_error"), 0);
    assert!((step.error_rate - 12.0 / 14.0).abs() < 1e-9);
    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    let statuses = table.u32s("http_status").unwrap();
    let errors = table.strs("error").unwrap();
    let classes = outcomes(dir.path());
    for (i, class) in classes.iter().enumerate() {
        assert_eq!(
            errors[i].is_none(),
            class == "ok",
            "request {i} ({class}): {:?}",
            errors[i]
        );
        let expected_status = match class.as_str() {
            "http_5xx" => Some(500),
            "http_429" => Some(429),
            "http_4xx" => Some(400),
            "timeout" => None,
            _ => Some(200),
        };
        assert_eq!(statuses[i], expected_status, "request {i} ({class})");
    }
}

#[test]
fn a_server_that_dies_mid_run_is_recorded_and_the_results_are_still_written() {
    let _serial = serial();
    let mut stub = Stub::start(|_| Behaviour::Stream {
        ttft: 20 * MS,
        gap: 5 * MS,
        tokens: 4,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let url = stub.url.clone();
    let path = dir.path().to_path_buf();
    let run = std::thread::spawn(move || {
        load(
            &url,
            &path,
            &[
                "--users",
                "2",
                "--duration",
                "3s",
                "--slo",
                "error_rate<=1%",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert!(stub.served() > 0);
    stub.kill();
    let output = run.join().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the SLO gate fails: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("error_rate<=1% failed"),
        "{}",
        stderr(&output)
    );
    let classes = outcomes(dir.path());
    let ok = classes.iter().filter(|c| *c == "ok").count();
    let failed = classes
        .iter()
        .filter(|c| matches!(c.as_str(), "connect_error" | "stream_broken"))
        .count();
    assert!(
        ok > 0 && failed > 0,
        "{ok} ok, {failed} failed: {classes:?}"
    );
    assert_eq!(ok + failed, classes.len(), "{classes:?}");
    assert_eq!(
        read_steps(dir.path()).unwrap()[0].requests as usize,
        classes.len()
    );
}

#[test]
fn without_usage_the_tokens_are_counted_from_the_stream() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: MS,
        gap: MS,
        tokens: 5,
        usage: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let output = load(
        &stub.url,
        dir.path(),
        &[
            "--max-users",
            "2",
            "--step-size",
            "2",
            "--requests-per-user",
            "3",
        ],
    );
    assert_success(&output);
    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    assert_eq!(table.len(), 6);
    assert!(
        table
            .u32s("output_tokens")
            .unwrap()
            .iter()
            .all(|&t| t == Some(5))
    );
    assert!(
        table
            .u32s("prompt_tokens")
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
    assert!(
        table
            .strs("token_source")
            .unwrap()
            .iter()
            .all(|s| s.as_deref() == Some("counted"))
    );
}

#[test]
fn ramp_steps_hold_their_users_and_gates_name_the_failing_step() {
    let _serial = serial();
    // Latency grows with the number of requests in flight: 20 ms per concurrent request.
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: 30 * MS,
        gap: MS,
        tokens: 2,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let output = load(
        &stub.url,
        dir.path(),
        &[
            "--max_users",
            "3",
            "--step_size",
            "1",
            "--requests-per-user",
            "4",
            "--slo",
            "p95_ttft<=1ms",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    for step in ["step 1 (1 users)", "step 2 (2 users)", "step 3 (3 users)"] {
        assert!(
            text.contains(&format!("{step}: p95_ttft<=1ms failed")),
            "{text}"
        );
    }
    let steps = read_steps(dir.path()).unwrap();
    let users: Vec<_> = steps.iter().map(|s| s.users).collect();
    assert_eq!(users, [Some(1), Some(2), Some(3)]);
    let requests: Vec<_> = steps.iter().map(|s| s.requests).collect();
    assert_eq!(requests, [4, 8, 12]);
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(summary.contains("p95_ttft<=1ms failed"), "{summary}");
}

#[test]
fn open_loop_keeps_its_rate_and_corrects_for_coordinated_omission() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: 200 * MS,
        gap: MS,
        tokens: 2,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let output = load(&stub.url, dir.path(), &["--rate", "20", "--duration", "2s"]);
    assert_success(&output);
    let step = &read_steps(dir.path()).unwrap()[0];
    assert_eq!(step.requests, 40, "20 req/s for 2 s");
    assert_eq!(step.offered_rate, Some(20.0));
    assert_close("p50 ttft", step.latency(Latency::Ttft, Stat::P50), 0.200);
    // Unthrottled, requests leave on time: corrected and plain latencies agree.
    assert_close(
        "p99 ttft corrected",
        step.latency(Latency::TtftCorrected, Stat::P99),
        0.200,
    );
    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    let intended = table.f64s("intended_start_s").unwrap();
    let start = table.f64s("start_s").unwrap();
    let worst_lag = intended
        .iter()
        .zip(&start)
        .map(|(i, s)| s.unwrap() - i.unwrap())
        .fold(0.0, f64::max);
    assert!(worst_lag < 0.002, "requests left up to {worst_lag} s late");

    // One request at a time against a schedule of 10 req/s of 200 ms requests: the queue
    // grows. The plain figures stay at 200 ms; the corrected ones count the wait.
    let capped = tempfile::tempdir().unwrap();
    let output = load(
        &stub.url,
        capped.path(),
        &["--rate", "10", "--duration", "1s", "--max-concurrency", "1"],
    );
    assert_success(&output);
    let step = &read_steps(capped.path()).unwrap()[0];
    assert_eq!(step.requests, 10);
    assert_close(
        "capped p99 ttft",
        step.latency(Latency::Ttft, Stat::P99),
        0.200,
    );
    // The last request was due at 0.9 s and could start only after nine others of 0.2 s.
    let corrected = step.latency(Latency::TtftCorrected, Stat::Max).unwrap();
    assert_close(
        "capped max ttft corrected",
        Some(corrected),
        1.8 - 0.9 + 0.2,
    );
}

#[test]
fn poisson_arrivals_are_seeded() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: MS,
        gap: MS,
        tokens: 1,
        usage: true,
    });
    let starts = |seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        let output = load(
            &stub.url,
            dir.path(),
            &[
                "--rate",
                "40",
                "--poisson",
                "--duration",
                "1s",
                "--seed",
                seed,
            ],
        );
        assert_success(&output);
        let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
        let mut intended: Vec<f64> = table
            .f64s("intended_start_s")
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        intended.sort_by(f64::total_cmp);
        let first = intended[0];
        intended
            .iter()
            .map(|t| ((t - first) * 1e3).round() as i64)
            .collect::<Vec<_>>()
    };
    let one = starts("3");
    assert_eq!(one, starts("3"), "same seed, same schedule");
    assert_ne!(one, starts("4"));
    let gaps: Vec<i64> = one.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().any(|&g| g != gaps[0]),
        "Poisson gaps vary: {gaps:?}"
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message_and_sends_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("http://127.0.0.1:{port}");
    let not_openai = Stub::not_openai();
    let stub = Stub::start(|_| Behaviour::Empty);
    let dataset = dir.path().join("prompts.jsonl");
    std::fs::write(
        &dataset,
        "{\"prompt\": \"fine\"}\n{\"prompt\": \"also fine\"}\nthis is not json\n",
    )
    .unwrap();
    let dataset = dataset.to_str().unwrap().to_string();
    let cases: [(&str, Vec<&str>, &str); 7] = [
        (&unreachable, vec!["--users", "1"], "cannot reach"),
        (
            &not_openai.url,
            vec!["--users", "1"],
            "does not look like an OpenAI-compatible server",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--slo", "p95_latency<2s"],
            "unknown metric \"p95_latency\"",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--slo", "error_rate<=5"],
            "write a percentage",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--dataset", &dataset],
            "prompts.jsonl:3: not a JSON object",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--model", "other"],
            "does not serve model \"other\"",
        ),
        (
            "https://example.com",
            vec!["--users", "1"],
            "https is not built in",
        ),
    ];
    for (url, args, expected) in cases {
        let output = load(url, &out, &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let text = stderr(&output);
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    assert_eq!(stub.served(), 0, "no request before the run is validated");
    assert!(!out.join("requests.parquet").exists());
}

#[test]
fn report_rebuilds_and_compares_runs() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: MS,
        gap: MS,
        tokens: 2,
        usage: true,
    });
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    for dir in [&first, &second] {
        assert_success(&load(
            &stub.url,
            dir.path(),
            &[
                "--max-users",
                "2",
                "--step-size",
                "1",
                "--requests-per-user",
                "2",
            ],
        ));
    }
    let page = first.path().join("results_viewer.html");
    std::fs::remove_file(&page).unwrap();
    let report = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_gembatch"))
            .arg("report")
            .args(args)
            .output()
            .unwrap()
    };
    let output = report(&[first.path().as_os_str()]);
    assert_success(&output);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("\"run_id\":\"test\""));
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "self-contained"
    );
    let output = report(&[
        first.path().as_os_str(),
        "--compare".as_ref(),
        second.path().as_os_str(),
    ]);
    assert_success(&output);
    let compared = String::from_utf8(output.stdout).unwrap();
    let html = std::fs::read_to_string(compared.trim()).unwrap();
    assert_eq!(
        html.matches("\"run_id\":\"test\"").count(),
        2,
        "both runs are on the page"
    );
    let output = report(&["/nonexistent-dir".as_ref()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/nonexistent-dir"),
        "{}",
        stderr(&output)
    );
}

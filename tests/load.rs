//! `gembatch load` end to end: the real binary against in-process stub servers whose delays
//! are programmed exactly, so every figure it writes can be checked: latencies, rates,
//! shapes, token counts, the report.

mod common;

use std::process::Command;
use std::time::Duration;

use common::load::{
    LOADED_MACHINE_SLACK_S, assert_all, assert_close, assert_success, count, load, serial, stderr,
};
use common::stub::{Behaviour, Stub};
use gembatch::results::load::read_steps;
use gembatch::results::step::{Latency, Stat};
use gembatch::results::table::Table;

const MS: Duration = Duration::from_millis(1);

#[test]
fn measured_latencies_match_the_programmed_delays() {
    let _serial = serial();
    // Delays long enough that 2 % and the loaded machine's slack (assert_close) are far
    // from the other programmed delays: a figure from the wrong instant fails.
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
    assert_all(
        "output_tokens",
        table.u32s("output_tokens").unwrap(),
        Some(tokens),
    );
    assert_all(
        "prompt_tokens",
        table.u32s("prompt_tokens").unwrap(),
        Some(7),
    );
    assert_all(
        "token_source",
        table.strs("token_source").unwrap(),
        Some("usage".to_string()),
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
fn https_servers_are_measured_once_trusted_and_refused_by_name_before() {
    let _serial = serial();
    let certs = tempfile::tempdir().unwrap();
    common::certs::serving_certificate(certs.path(), "gembatch-stub");
    let stub = Stub::start_tls(certs.path(), |_| Behaviour::Stream {
        ttft: 5 * MS,
        gap: MS,
        tokens: 3,
        usage: true,
    });
    assert!(stub.url.starts_with("https://127.0.0.1:"), "{}", stub.url);
    let ca = certs.path().join("ca.crt");
    let shape = [
        "--max-users",
        "2",
        "--step-size",
        "2",
        "--requests-per-user",
        "5",
    ];
    for trust in [vec!["--cacert", ca.to_str().unwrap()], vec!["--insecure"]] {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = trust.iter().chain(&shape).copied().collect();
        let output = load(&stub.url, dir.path(), &args);
        assert_success(&output);
        let step = &read_steps(dir.path()).unwrap()[0];
        assert_eq!((step.requests, count(step, "ok")), (10, 10), "{trust:?}");
    }
    assert_eq!(stub.served(), 20);

    // The system's roots do not vouch for the test CA; a key is not a CA certificate.
    let out = tempfile::tempdir().unwrap();
    let key = certs.path().join("server.key");
    for (args, expected) in [
        (
            vec![],
            "the server's certificate is not trusted (invalid peer certificate: UnknownIssuer); trust its CA with --cacert FILE, or pass --insecure for a test server",
        ),
        (
            vec!["--cacert", key.to_str().unwrap()],
            "holds no CA certificate",
        ),
    ] {
        let args: Vec<&str> = args.into_iter().chain(["--users", "1"]).collect();
        let output = load(&stub.url, out.path(), &args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains(expected), "{text}");
    }
    assert_eq!(stub.served(), 20, "nothing sent without trust");
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
    assert_all(
        "output_tokens",
        table.u32s("output_tokens").unwrap(),
        Some(5),
    );
    assert_all("prompt_tokens", table.u32s("prompt_tokens").unwrap(), None);
    assert_all(
        "token_source",
        table.strs("token_source").unwrap(),
        Some("counted".to_string()),
    );
}

#[test]
fn openai_base_url_with_a_gateway_path_is_loaded_when_no_url_is_given() {
    let _serial = serial();
    let stub = Stub::behind_gateway("/openai", |_| Behaviour::Stream {
        ttft: MS,
        gap: MS,
        tokens: 3,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "load",
            "--max-users",
            "1",
            "--step-size",
            "1",
            "--requests-per-user",
            "4",
        ])
        .arg("--out")
        .arg(dir.path())
        .env_remove("GEMBATCH_LOAD_URL")
        .env_remove("OPENAI_API_KEY")
        .env("OPENAI_BASE_URL", format!("{}/openai/v1", stub.url))
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(
        stub.served(),
        4,
        "every request went through the gateway's path"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["target"],
        format!("{}/openai", stub.url),
        "{summary}"
    );
}

#[test]
fn ramp_steps_hold_their_users_and_gates_name_the_failing_step() {
    let _serial = serial();
    // Every first token takes 30 ms, so the 1 ms gate fails on every step.
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
    // The schedule's own thread sends within ~0.3 ms on a quiet machine; a loaded one may
    // preempt it for a scheduler tick or two. A schedule that waits for replies (coordinated
    // omission) or sends in bursts is late by a whole interval, 50 ms at 20 req/s.
    assert!(
        worst_lag < LOADED_MACHINE_SLACK_S,
        "requests left up to {worst_lag} s late"
    );

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
    // The last request was due at 0.9 s and could start only after nine others of 0.2 s;
    // each of the ten in that chain may carry the loaded machine's slack. Uncorrected, the
    // figure would be 0.2 s.
    let corrected = step.latency(Latency::TtftCorrected, Stat::Max).unwrap();
    let expected = 1.8 - 0.9 + 0.2;
    assert!(
        (expected - 0.002..=expected + 10.0 * LOADED_MACHINE_SLACK_S).contains(&corrected),
        "capped max ttft corrected: measured {corrected:.6} s, programmed {expected:.6} s"
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

#[test]
fn a_parquet_dataset_feeds_the_requests() {
    use gembatch::results::table::{Cell, Column, Kind, write_all};
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: MS,
        gap: MS,
        tokens: 2,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("prompts.parquet");
    let columns = vec![
        Column::new("id", Kind::I64, |i: &u64| Cell::int(Some(*i))),
        Column::new("prompt", Kind::Str, |i: &u64| {
            Cell::owned_text(Some(format!("prompt {i}")))
        }),
    ];
    write_all(&dataset, columns, 0..3u64).unwrap();
    let out = dir.path().join("run");
    let output = load(
        &stub.url,
        &out,
        &[
            "--dataset",
            dataset.to_str().unwrap(),
            "--max-users",
            "1",
            "--step-size",
            "1",
            "--requests-per-user",
            "6",
        ],
    );
    assert_success(&output);
    assert_eq!(stub.served(), 6);
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("prompts.parquet"), "{summary}");
    assert_eq!(read_steps(&out).unwrap()[0].requests, 6);
}

//! `gembatch load` when things go wrong: every outcome class counted exactly, a server that
//! dies mid-run, bad input before any request, Ctrl-C.

mod common;

use std::process::Command;
use std::time::Duration;

use common::load::{assert_success, count, load, outcomes, serial, stderr};
use common::stub::{Behaviour, Stub};
use gembatch::results::load::read_steps;
use gembatch::results::table::Table;

const MS: Duration = Duration::from_millis(1);

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
        Behaviour::Shed { retry_after_s: 3 },
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
    // An empty completion is a success counted apart, not an error.
    assert!((step.error_rate - 10.0 / 14.0).abs() < 1e-9);
    assert!((step.empty_rate - 2.0 / 14.0).abs() < 1e-9);
    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    let statuses = table.u32s("http_status").unwrap();
    let errors = table.strs("error").unwrap();
    let classes = outcomes(dir.path());
    for (i, class) in classes.iter().enumerate() {
        assert_eq!(
            errors[i].is_none(),
            class == "ok" || class == "empty_completion",
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
    // The 429s asked for 3 s each: counted in every place, not waited for.
    let asked = table.f64s("retry_after_s").unwrap();
    for (i, class) in classes.iter().enumerate() {
        let expected = (class == "http_429").then_some(3.0);
        assert_eq!(asked[i], expected, "request {i} ({class})");
    }
    assert_eq!(step.retry_asked.count, 2);
    assert_eq!(step.retry_asked.longest, Duration::from_secs(3));
    let summary = gembatch::results::load_summary::read(dir.path()).unwrap();
    assert_eq!(summary.retry_after.count, 2);
    assert_eq!(summary.retry_after.longest_s, 3.0);
    let words = stderr(&output);
    assert!(
        words.contains("2 answers asked to retry later (Retry-After up to 3.00 s)"),
        "{words}"
    );
}

#[test]
fn a_broken_or_hostile_stream_is_cut_off_at_its_caps_and_done_means_done() {
    let _serial = serial();
    let script = [
        Behaviour::EndlessLine,
        Behaviour::Flood,
        Behaviour::OpenAfterDone,
    ];
    let stub = Stub::start(move |n| script[n as usize % script.len()]);
    let dir = tempfile::tempdir().unwrap();
    let output = load(
        &stub.url,
        dir.path(),
        &[
            "--max-users",
            "1",
            "--step-size",
            "1",
            "--requests-per-user",
            "6",
            "--output-tokens",
            "8",
            "--timeout",
            "15s",
        ],
    );
    assert_success(&output);
    let classes = outcomes(dir.path());
    let table = Table::read(&dir.path().join("requests.parquet")).unwrap();
    let errors = table.strs("error").unwrap();
    let starts = table.f64s("start_s").unwrap();
    let ends = table.f64s("end_s").unwrap();
    for (i, class) in classes.iter().enumerate() {
        let (expected, words) = match i % 3 {
            0 => ("stream_broken", "over 1024 KiB without ending it"),
            1 => ("stream_broken", "more than the request's max_tokens allow"),
            _ => ("ok", ""),
        };
        assert_eq!(class, expected, "request {i}: {:?}", errors[i]);
        let error = errors[i].clone().unwrap_or_default();
        assert!(error.contains(words), "request {i}: {error}");
        let latency = ends[i].unwrap() - starts[i].unwrap();
        assert!(
            latency < 5.0,
            "request {i} took {latency} s: cut off, not timed out"
        );
    }
    assert_eq!(classes.len(), 6);
}

#[test]
fn empty_completions_are_successes_with_a_gate_of_their_own_and_few_requests_are_not_judged() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Empty);
    let dir = tempfile::tempdir().unwrap();
    let four = [
        "--max-users",
        "1",
        "--step-size",
        "1",
        "--requests-per-user",
        "4",
        "--slo",
        "error_rate<=0%,empty_rate<=50%",
    ];
    let output = load(&stub.url, dir.path(), &four);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("empty_rate<=50% failed, measured 100.00%"),
        "{text}"
    );
    assert!(!text.contains("error_rate<=0% failed"), "{text}");
    let step = &read_steps(dir.path()).unwrap()[0];
    assert_eq!(
        (
            count(step, "empty_completion"),
            step.error_rate,
            step.empty_rate
        ),
        (4, 0.0, 1.0)
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(
        summary.contains("\"empty_completion\",\n      4"),
        "{summary}"
    );

    // The same four requests under a stated minimum of ten: said, not failed.
    let dir = tempfile::tempdir().unwrap();
    let mut args = four.to_vec();
    args.extend(["--slo-min-requests", "10"]);
    let output = load(&stub.url, dir.path(), &args);
    assert_success(&output);
    let expected =
        "step 1 (1 users): not judged: 4 request(s), fewer than the 10 the SLO gates need";
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(summary.contains(expected), "{summary}");
    assert!(summary.contains("\"slo_min_requests\": 10"), "{summary}");
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
fn bad_input_exits_2_with_a_clear_message_and_sends_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Nothing listens on a port we just freed.
    let port = common::ports::unused_port();
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
    let no_prompt = dir.path().join("other.parquet");
    let columns = vec![gembatch::results::table::Column::new(
        "text",
        gembatch::results::table::Kind::Str,
        |t: &&str| gembatch::results::table::Cell::text(Some(t)),
    )];
    gembatch::results::table::write_all(&no_prompt, columns, ["a"]).unwrap();
    let no_prompt = no_prompt.to_str().unwrap().to_string();
    let cases: [(&str, Vec<&str>, &str); 10] = [
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
            vec!["--users", "1", "--dataset", &no_prompt],
            "other.parquet: no text column `prompt`",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--model", "other"],
            "does not serve model \"other\"",
        ),
        (
            "ftp://example.com",
            vec!["--users", "1"],
            "write it as http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--watch-deployment", "gembatch-serve"],
            "expected NAMESPACE/NAME",
        ),
        (
            &stub.url,
            vec!["--users", "1", "--watch-deployment", "gembatch/serve"],
            "no Kubernetes configuration",
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
fn ctrl_c_stops_the_run_and_still_writes_what_ran() {
    let _serial = serial();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: 20 * MS,
        gap: 5 * MS,
        tokens: 3,
        usage: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "load",
            "--url",
            &stub.url,
            "--run-id",
            "cut",
            "--users",
            "2",
            "--duration",
            "60s",
            "--out",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the run stops at once"
    );
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    let step = &read_steps(dir.path()).unwrap()[0];
    assert!(step.requests > 10, "{} requests", step.requests);
    assert_eq!(
        count(step, "ok"),
        step.requests,
        "interrupted requests are not failures"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(summary.contains("\"interrupted\": true"), "{summary}");
    assert!(dir.path().join("results_viewer.html").exists());
}

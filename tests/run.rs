//! `gembatch run` end to end against in-process stub servers standing in for pods: every
//! dataset row ends with exactly one result, whatever fails (requests, pods, the runner).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::run::{Requests, Workspace, assert_success, expected_ids, json_lines, run, text};
use common::stub::{Behaviour, Stub};
use gembatch::results::table::Table;

fn quick() -> Behaviour {
    Behaviour::Stream {
        ttft: Duration::from_millis(2),
        gap: Duration::from_millis(1),
        tokens: 4,
        usage: true,
    }
}

const FAST_RETRIES: &str = "retries: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 40ms}";

#[test]
fn every_row_gets_one_result_spread_over_the_pods() {
    let space = Workspace::new();
    let (a, b) = (Stub::start(|_| quick()), Stub::start(|_| quick()));
    let dataset = space.dataset(200);
    let job = space.job(&dataset, "shard_size: 16\nconcurrency_per_pod: 4");
    let endpoints = format!("{},{}", a.url, b.url);
    let output = run(&job, &["--endpoints", &endpoints, "--run-id", "r1"]);
    assert_success(&output);
    assert!(
        text(&output).contains("200 rows: 200 ok, 0 failed, 0 invalid"),
        "{}",
        text(&output)
    );
    assert_eq!(
        a.served() + b.served(),
        200,
        "one request per row, none twice"
    );
    assert!(
        a.served() > 20 && b.served() > 20,
        "{} / {}",
        a.served(),
        b.served()
    );

    let dir = space.run_dir("r1");
    let requests = Requests::read(&dir);
    assert_eq!(requests.sorted_ids(), expected_ids(200));
    assert!(requests.strs("status").iter().all(|s| s == "ok"));
    assert!(requests.strs("output").iter().all(|s| s == "toktoktoktok"));
    assert!(requests.u32s("output_tokens").iter().all(|&t| t == 4));
    let pods = requests.strs("pod");
    assert!(pods.iter().any(|p| p == "endpoint-0") && pods.iter().any(|p| p == "endpoint-1"));
    let shards = requests.table.u64s("shard").unwrap();
    assert_eq!(
        shards.iter().flatten().max(),
        Some(&12),
        "200 rows in shards of 16"
    );
    for column in ["queue_s", "ttft_s", "e2e_s"] {
        let values = requests.table.f64s(column).unwrap();
        assert!(
            values
                .iter()
                .all(|v| v.is_some_and(|v| (0.0..5.0).contains(&v))),
            "{column}"
        );
    }

    let output_lines = json_lines(&dir.join("output.jsonl"));
    assert_eq!(output_lines.len(), 200);
    assert_eq!(output_lines[0]["custom_id"], "r0000");
    assert_eq!(output_lines[0]["response"]["status_code"], 200);
    assert_eq!(
        output_lines[0]["response"]["body"]["choices"][0]["text"],
        "toktoktoktok"
    );
    assert_eq!(output_lines[0]["response"]["body"]["model"], "stub-model");
    assert!(json_lines(&dir.join("errors.jsonl")).is_empty());

    let summary = Table::read(&dir.join("summary.parquet")).unwrap();
    let scopes = summary.strs("scope").unwrap();
    assert_eq!(
        scopes
            .iter()
            .filter(|s| s.as_deref() == Some("pod"))
            .count(),
        2
    );
    assert_eq!(
        scopes
            .iter()
            .filter(|s| s.as_deref() == Some("shard"))
            .count(),
        13
    );
    assert_eq!(summary.u64s("rows").unwrap()[0], Some(200));
    assert!(summary.f64s("output_tokens_per_s").unwrap()[0].unwrap() > 0.0);
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 13);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("\"kind\":\"batch\"") && report.contains("endpoint-1"));
}

#[test]
fn a_retry_waits_as_long_as_the_servers_retry_after_asks() {
    let space = Workspace::new();
    // Each row is shed once with `Retry-After: 2`, far beyond the job's own backoff (40 ms).
    let first_seen = std::sync::Mutex::new(std::collections::HashMap::new());
    let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = waits.clone();
    let stub = Stub::start_by_body(move |_, body| {
        let row = body
            .split("prompt number ")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut seen = first_seen.lock().unwrap();
        match seen.get(&row) {
            None => {
                seen.insert(row, std::time::Instant::now());
                Behaviour::Shed { retry_after_s: 2 }
            }
            Some(first) => {
                recorded.lock().unwrap().push(first.elapsed());
                quick()
            }
        }
    });
    let dataset = space.dataset(3);
    let job = space.job(&dataset, FAST_RETRIES);
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "later"]);
    assert_success(&output);
    let requests = Requests::read(&space.run_dir("later"));
    assert_eq!(requests.u32s("attempts"), [2, 2, 2]);
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 3);
    for wait in waits.iter() {
        assert!(
            *wait >= Duration::from_secs(2) && *wait < Duration::from_secs(10),
            "retried after {wait:?}"
        );
    }
}

#[test]
fn passthrough_fields_reach_requests_parquet_and_never_the_model() {
    let space = Workspace::new();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let stub = Stub::start_by_body(move |_, body| {
        seen.lock().unwrap().push(body.to_string());
        quick()
    });
    let text: String = (0..30usize)
        .map(|i| {
            let lang = if i.is_multiple_of(2) { "\"en\"" } else { "null" };
            format!("{{\"id\": \"r{i:04}\", \"prompt\": \"p {i}\", \"doc_id\": {i}, \"lang\": {lang}}}\n")
        })
        .collect();
    let dataset = space.file("data.jsonl", &text);
    let job = space.file(
        "job.yaml",
        &format!(
            "name: test\ndataset:\n  path: {}\n  fields: {{passthrough: [doc_id, lang]}}\noutput: {}\nshard_size: 7\n",
            dataset.display(),
            space.results().display()
        ),
    );
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "kept"]);
    assert_success(&output);
    let requests = Requests::read(&space.run_dir("kept"));
    let ids = requests.strs("id");
    let docs = requests.strs("doc_id");
    let langs = requests.table.strs("lang").unwrap();
    assert_eq!(ids.len(), 30);
    for ((id, doc), lang) in ids.iter().zip(&docs).zip(&langs) {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(doc, &i.to_string(), "{id}");
        assert_eq!(lang.as_deref(), i.is_multiple_of(2).then_some("en"), "{id}");
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 30);
    for body in bodies.iter() {
        assert!(!body.contains("doc_id") && !body.contains("lang"), "{body}");
    }
}

#[test]
fn failures_are_retried_with_backoff_then_recorded() {
    let space = Workspace::new();
    // Every third row is shed (429) on its first attempt only; row 7 always fails with 503,
    // row 8 with 400.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let stub = Stub::start_by_body(move |_, body| {
        let row: u32 = body
            .split("prompt number ")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .expect("a row number in the prompt");
        let first_attempt = seen.lock().unwrap().insert(row);
        match row {
            7 => Behaviour::Status(503),
            8 => Behaviour::Status(400),
            _ if row.is_multiple_of(3) && first_attempt => Behaviour::Status(429),
            _ => quick(),
        }
    });
    let dataset = space.dataset(30);
    let job = space.job(&dataset, &format!("shard_size: 8\n{FAST_RETRIES}"));
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "r"]);
    assert_success(&output);
    let dir = space.run_dir("r");
    let requests = Requests::read(&dir);
    assert_eq!(requests.sorted_ids(), expected_ids(30));
    let (ids, status, codes, attempts) = (
        requests.strs("id"),
        requests.strs("status"),
        requests.strs("error_code"),
        requests.u32s("attempts"),
    );
    for i in 0..ids.len() {
        match ids[i].as_str() {
            "r0007" => {
                assert_eq!(
                    (status[i].as_str(), codes[i].as_str(), attempts[i]),
                    ("failed", "http_5xx", 3)
                );
            }
            "r0008" => {
                assert_eq!(
                    (status[i].as_str(), codes[i].as_str(), attempts[i]),
                    ("failed", "http_4xx", 1),
                    "4xx is not retried"
                );
            }
            id => assert_eq!(status[i], "ok", "{id} succeeds on a retry"),
        }
    }
    for (id, &attempts) in ids.iter().zip(&attempts) {
        let row: u32 = id[1..].parse().unwrap();
        if row.is_multiple_of(3) {
            assert_eq!(attempts, 2, "{id}: shed once, then served");
        } else if row != 7 {
            assert_eq!(attempts, 1, "{id}");
        }
    }
    let errors = json_lines(&dir.join("errors.jsonl"));
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["custom_id"], "r0007");
    assert_eq!(errors[0]["response"]["status_code"], 503);
    assert_eq!(errors[0]["error"]["code"], "http_5xx");
    assert_eq!(json_lines(&dir.join("output.jsonl")).len(), 28);
}

#[test]
fn invalid_rows_stop_the_run_before_anything_starts_or_go_to_errors() {
    let space = Workspace::new();
    let stub = Stub::start(|_| quick());
    let dataset = space.file(
        "bad.jsonl",
        concat!(
            "{\"id\": \"a\", \"prompt\": \"one\"}\n",
            "{\"id\": \"b\"}\n",
            "not json\n",
            "{\"id\": \"a\", \"prompt\": \"again\"}\n",
            "{\"id\": \"c\", \"prompt\": \"three\"}\n",
        ),
    );
    let job = space.job(&dataset, "shard_size: 2");
    let refused = run(&job, &["--endpoints", &stub.url, "--run-id", "bad"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let message = text(&refused);
    for expected in [
        "3 of 5 rows are invalid",
        "bad.jsonl:2: the row has neither `prompt` nor `messages`",
        "bad.jsonl:3: not a JSON object",
        "bad.jsonl:4: duplicate id \"a\" (first on line 1)",
        "--skip-invalid",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    assert!(!space.run_dir("bad").exists(), "nothing started");
    assert_eq!(stub.served(), 0);

    let output = run(
        &job,
        &[
            "--endpoints",
            &stub.url,
            "--run-id",
            "skip",
            "--skip-invalid",
        ],
    );
    assert_success(&output);
    let dir = space.run_dir("skip");
    let requests = Requests::read(&dir);
    assert_eq!(requests.table.len(), 5, "every row has its one result");
    let errors = json_lines(&dir.join("errors.jsonl"));
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e["error"]["code"] == "invalid_row"));
    assert_eq!(errors[0]["custom_id"], "b");
    assert_eq!(
        errors[1]["custom_id"], "3",
        "a malformed line is named by its line"
    );
    assert_eq!(errors[2]["custom_id"], "a", "the duplicate keeps its id");
    assert_eq!(stub.served(), 2);
}

#[test]
fn a_pod_that_dies_at_a_random_point_loses_nothing() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for round in 0..3 {
        let space = Workspace::new();
        let slow = || Behaviour::Stream {
            ttft: Duration::from_millis(10),
            gap: Duration::from_millis(5),
            tokens: 4,
            usage: true,
        };
        let mut doomed = Stub::start(move |_| slow());
        let survivor = Stub::start(move |_| slow());
        let dataset = space.dataset(120);
        let job = space.job(
            &dataset,
            &format!("shard_size: 10\nconcurrency_per_pod: 4\n{FAST_RETRIES}"),
        );
        let endpoints = format!("{},{}", doomed.url, survivor.url);
        let child = common::run::spawn(&job, &["--endpoints", &endpoints, "--run-id", "r"]);
        let kill_after = rng.random_range(4..50);
        while doomed.served() < kill_after {
            std::thread::sleep(Duration::from_millis(1));
        }
        doomed.kill();
        let output = child.wait_with_output().unwrap();
        let message = text(&output);
        assert!(output.status.success(), "round {round}: {message}");
        assert!(message.contains("stopped answering"), "{message}");
        let requests = Requests::read(&space.run_dir("r"));
        assert_eq!(requests.sorted_ids(), expected_ids(120), "round {round}");
        assert!(
            requests.strs("status").iter().all(|s| s == "ok"),
            "round {round}: in-flight rows went to the other pod"
        );
        let on_doomed = requests
            .strs("pod")
            .iter()
            .filter(|p| *p == "endpoint-0")
            .count();
        assert!(
            on_doomed as u64 <= kill_after,
            "{on_doomed} rows finished on the dead pod"
        );
    }
}

#[test]
fn a_runner_killed_at_random_points_resumes_to_exactly_one_result_per_row() {
    use rand::{Rng, SeedableRng};
    let space = Workspace::new();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(3),
        gap: Duration::from_millis(2),
        tokens: 4,
        usage: true,
    });
    let rows = 600;
    let dataset = space.dataset(rows);
    let job = space.job(&dataset, "shard_size: 20\nconcurrency_per_pod: 4");
    let dir = space.run_dir("crashy");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // (when the runner was killed, the shards committed by then)
    let mut kills: Vec<(f64, Vec<u64>)> = Vec::new();
    for attempt in 0..5 {
        let args: &[&str] = if attempt == 0 {
            &["--endpoints", &stub.url, "--run-id", "crashy"]
        } else {
            &["--endpoints", &stub.url, "--resume", "crashy"]
        };
        let mut child = common::run::spawn(&job, args);
        while !dir.join("ledger.jsonl").exists() {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(30..300)));
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        let killed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let committed: Vec<u64> = std::fs::read_to_string(dir.join("ledger.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|entry| entry["shard"].as_u64())
            .collect();
        kills.push((killed_at, committed));
    }
    assert!(
        kills
            .iter()
            .any(|(_, committed)| !committed.is_empty() && committed.len() < 30),
        "some kill landed mid-run: {kills:?}"
    );
    let output = run(&job, &["--endpoints", &stub.url, "--resume", "crashy"]);
    assert_success(&output);

    let requests = Requests::read(&dir);
    assert_eq!(
        requests.sorted_ids(),
        expected_ids(rows),
        "exactly one result per row"
    );
    assert!(requests.strs("status").iter().all(|s| s == "ok"));
    // A shard committed before a kill was never sent again: its rows finished before it.
    let shards = requests.table.u64s("shard").unwrap();
    let finished = requests.table.instants("finished_at").unwrap();
    for (killed_at, committed) in &kills {
        for (shard, finished) in shards.iter().zip(&finished) {
            if committed.contains(&shard.unwrap()) {
                assert!(finished.unwrap() < *killed_at, "shard {shard:?} was redone");
            }
        }
    }
    assert_eq!(json_lines(&dir.join("output.jsonl")).len(), rows);
}

#[test]
fn when_every_pod_is_lost_the_run_stops_and_resumes_elsewhere() {
    let space = Workspace::new();
    let mut lone = Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(5),
        gap: Duration::from_millis(5),
        tokens: 4,
        usage: true,
    });
    let dataset = space.dataset(100);
    let job = space.job(&dataset, &format!("shard_size: 10\n{FAST_RETRIES}"));
    let child = common::run::spawn(&job, &["--endpoints", &lone.url, "--run-id", "lost"]);
    while lone.served() < 30 {
        std::thread::sleep(Duration::from_millis(2));
    }
    lone.kill();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(message.contains("every pod stopped answering"), "{message}");
    assert!(message.contains("--resume lost"), "{message}");

    let replacement = Stub::start(|_| quick());
    let output = run(&job, &["--endpoints", &replacement.url, "--resume", "lost"]);
    assert_success(&output);
    let requests = Requests::read(&space.run_dir("lost"));
    assert_eq!(requests.sorted_ids(), expected_ids(100));
    assert!(
        replacement.served() < 100,
        "committed shards were not sent again"
    );
}

#[test]
fn load_verification_runs_against_the_pods_during_the_batch() {
    let space = Workspace::new();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(5),
        gap: Duration::from_millis(5),
        tokens: 4,
        usage: true,
    });
    let dataset = space.dataset(200);
    let profile = |slo: &str| {
        format!(
            "shard_size: 20\nconcurrency_per_pod: 2\nload_verification: {{users: 1, duration: 1s, output_tokens: 4, slo: \"{slo}\"}}"
        )
    };
    let job = space.job(&dataset, &profile("error_rate<=0%"));
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "both"]);
    assert_success(&output);
    let dir = space.run_dir("both");
    let steps = Table::read(&dir.join("load/steps.parquet")).unwrap();
    assert_eq!(steps.len(), 1);
    let load_requests = steps.u64s("requests").unwrap()[0].unwrap();
    assert!(load_requests > 5, "{load_requests} load requests");
    assert!(dir.join("load/results_viewer.html").exists());
    assert_eq!(Requests::read(&dir).table.len(), 200);
    assert!(stub.served() >= 200 + load_requests);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("load/results_viewer.html"),
        "the batch report links the load report"
    );

    // A gate that cannot pass fails the run, after every output is written.
    let job = space.job(&dataset, &profile("p50_e2e<=1ms"));
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "gated"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("load verification SLO failed"),
        "{}",
        text(&output)
    );
    assert_eq!(Requests::read(&space.run_dir("gated")).table.len(), 200);

    let skipped = run(
        &job,
        &[
            "--endpoints",
            &stub.url,
            "--run-id",
            "no-load",
            "--no-load-verification",
        ],
    );
    assert_success(&skipped);
    assert!(!space.run_dir("no-load").join("load").exists());
}

#[test]
fn resuming_a_finished_run_writes_its_outputs_again_and_starts_nothing() {
    let space = Workspace::new();
    let stub = Stub::start(|_| quick());
    let dataset = space.dataset(60);
    let job = space.job(
        &dataset,
        "shard_size: 20\nload_verification: {users: 1, duration: 1s, output_tokens: 2}",
    );
    assert_success(&run(&job, &["--endpoints", &stub.url, "--run-id", "done"]));
    let dir = space.run_dir("done");
    let first_output = std::fs::read_to_string(dir.join("output.jsonl")).unwrap();
    // A crash between the last commit and the outputs.
    for file in [
        "output.jsonl",
        "requests.parquet",
        "report.html",
        "summary.parquet",
    ] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    let served = stub.served();
    // Nothing listens there: any request, reservation or load check would fail the run.
    let port = common::ports::unused_port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let output = run(&job, &["--endpoints", &nowhere, "--resume", "done"]);
    assert_success(&output);
    assert!(
        text(&output).contains("every shard of done (3) is committed"),
        "{}",
        text(&output)
    );
    assert_eq!(stub.served(), served);
    assert_eq!(Requests::read(&dir).sorted_ids(), expected_ids(60));
    assert!(dir.join("report.html").exists() && dir.join("summary.parquet").exists());
    let rebuilt = std::fs::read_to_string(dir.join("output.jsonl")).unwrap();
    assert_eq!(rebuilt, first_output, "the same lines, the same model");
    assert!(!dir.join("load-2").exists(), "no second load check");
}

#[test]
fn prompts_longer_than_the_context_are_refused_before_anything_starts() {
    let space = Workspace::new();
    let stub = Stub::start(|_| quick());
    let model = common::default_model_path();
    let long = "word ".repeat(200);
    let dataset = space.file(
        "data.jsonl",
        &format!(
            "{{\"id\": \"short\", \"prompt\": \"Hello\"}}\n{{\"id\": \"long\", \"prompt\": \"{long}\"}}\n\
             {{\"id\": \"wraps\", \"prompt\": \"Hi\", \"max_tokens\": 18446744073709551615}}\n\
             {{\"id\": \"words\", \"prompt\": \"Hi\", \"max_tokens\": \"ten\"}}\n"
        ),
    );
    let job = space.job(
        &dataset,
        &format!(
            "model: {{path: {}, context: 64}}\ngeneration: {{max_tokens: 32}}",
            model.display()
        ),
    );
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "long"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(message.contains("data.jsonl:2: prompt of 202 tokens (with BOS) plus max_tokens 32 exceeds the model's context of 64 tokens"), "{message}");
    assert!(
        message.contains("data.jsonl:3: prompt of ")
            && message.contains("plus max_tokens 18446744073709551615 exceeds"),
        "{message}"
    );
    assert!(
        message.contains("data.jsonl:4: max_tokens \"ten\" is not a whole number of at least 1"),
        "{message}"
    );
    assert_eq!(stub.served(), 0);
}

#[test]
fn flags_override_the_job_and_mistakes_name_what_to_fix() {
    let space = Workspace::new();
    let stub = Stub::start(|_| quick());
    let dataset = space.dataset(10);
    let job = space.job(&dataset, "");
    let renamed = space.file(
        "other.jsonl",
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n{\"prompt\": \"c\"}\n",
    );
    let elsewhere = space.dir.path().join("elsewhere");
    let output = run(
        &job,
        &[
            "--endpoints",
            &stub.url,
            "--dataset",
            renamed.to_str().unwrap(),
            "--out",
            elsewhere.to_str().unwrap(),
            "--run-id",
            "o",
        ],
    );
    assert_success(&output);
    assert_eq!(
        Requests::read(&elsewhere.join("o")).table.len(),
        3,
        "--dataset and --out win"
    );

    for (args, code, expected) in [
        (
            vec!["--gpus", "11"],
            2,
            "field `capacity.gpus`: must be 1 to 10",
        ),
        (
            vec!["--backend", "kubernetes", "--run-id", "k"],
            2,
            "no Kubernetes configuration",
        ),
        (vec!["--resume", "nope"], 2, "no run to resume"),
        (
            vec!["--endpoints", &stub.url, "--run-id", "bad id"],
            2,
            "--run-id",
        ),
    ] {
        let output = run(&job, &args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(expected),
            "{args:?}: {}",
            text(&output)
        );
    }
    let missing = run(&space.dir.path().join("missing.yaml"), &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("cannot read job file"),
        "{}",
        text(&missing)
    );
}

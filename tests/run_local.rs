//! `gembatch run` on the local backend, the embedded default: real `gembatch serve` children
//! on the default model stand in for GPU pods. Whatever ends the run (success, a pod killed,
//! SIGTERM, a SIGKILL of the runner), no pod process outlives it.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::run::{Requests, Workspace, expected_ids, text};

/// A small job on two local pods, one thread each.
fn local_job(space: &Workspace, rows: usize) -> std::path::PathBuf {
    common::default_model_path();
    let dataset = space.dataset(rows);
    space.job(
        &dataset,
        "capacity: {backend: local, gpus: 2, threads_per_pod: 1, ready_timeout: 2m}\n\
         shard_size: 2\nconcurrency_per_pod: 2\n\
         generation: {max_tokens: 12, temperature: 0}\n\
         retries: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}",
    )
}

/// Waits until `path` exists.
fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pods' process ids from `pods.json`.
fn pod_pids(dir: &Path) -> Vec<i32> {
    let path = dir.join("pods.json");
    wait_for(&path, Duration::from_secs(120));
    let pods: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    pods.iter()
        .map(|pod| pod["pid"].as_i64().expect("a local pod has a pid") as i32)
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn assert_gone_within(pids: &[i32], limit: Duration) {
    let start = Instant::now();
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            start.elapsed() < limit,
            "pod processes {pids:?} outlived the runner"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: sending a signal to a process this test started (or its child).
    unsafe {
        libc::kill(pid, signal);
    }
}

fn wait_for_commit(dir: &Path) {
    let ledger = dir.join("ledger.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&ledger).map_or(true, |text| text.is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no shard committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> std::process::Output {
    child.wait_with_output().expect("the runner exits")
}

#[test]
fn a_local_pod_killed_mid_run_loses_nothing_and_no_pod_outlives_the_run() {
    let _serial = common::load::serial();
    let space = Workspace::new();
    let job = local_job(&space, 16);
    let child = common::run::spawn(&job, &["--run-id", "local"]);
    let dir = space.run_dir("local");
    let pids = pod_pids(&dir);
    assert_eq!(pids.len(), 2);
    wait_for_commit(&dir);
    signal(pids[0], libc::SIGKILL);
    let output = finish(child);
    assert!(output.status.success(), "{}", text(&output));
    let requests = Requests::read(&dir);
    assert_eq!(requests.sorted_ids(), expected_ids(16));
    assert!(
        requests.strs("status").iter().all(|s| s == "ok"),
        "{}",
        text(&output)
    );
    assert!(requests.strs("output").iter().all(|s| !s.is_empty()));
    assert_gone_within(&pids, Duration::from_secs(1));
}

#[test]
fn sigterm_stops_the_run_and_its_pods_and_says_how_to_resume() {
    let _serial = common::load::serial();
    let space = Workspace::new();
    let job = local_job(&space, 40);
    let child = common::run::spawn(&job, &["--run-id", "term"]);
    let dir = space.run_dir("term");
    let pids = pod_pids(&dir);
    wait_for_commit(&dir);
    signal(child.id() as i32, libc::SIGTERM);
    let output = finish(child);
    assert_eq!(output.status.code(), Some(143), "{}", text(&output));
    let message = text(&output);
    assert!(message.contains("interrupted"), "{message}");
    assert!(message.contains("--resume term"), "{message}");
    assert!(
        message.contains("released: local pods stopped"),
        "{message}"
    );
    assert_gone_within(&pids, Duration::from_secs(1));
}

#[test]
fn a_runner_killed_with_sigkill_takes_its_pods_along() {
    let _serial = common::load::serial();
    let space = Workspace::new();
    let job = local_job(&space, 40);
    let mut child = common::run::spawn(&job, &["--run-id", "kill"]);
    let pids = pod_pids(&space.run_dir("kill"));
    child.kill().unwrap();
    child.wait().unwrap();
    // The parent-death signal is SIGTERM: each pod drains for at most 5 s, then exits.
    assert_gone_within(&pids, Duration::from_secs(15));
}

#[test]
fn a_second_runner_on_a_run_is_refused_and_a_retry_after_a_crash_finishes_it() {
    let _serial = common::load::serial();
    let space = Workspace::new();
    // Long enough (about 30 s on 2 cores) that the first runner is still at it while the
    // second ones try.
    let job = local_job(&space, 200);
    let mut first = common::run::spawn(&job, &["--start-or-resume", "twice"]);
    let dir = space.run_dir("twice");
    pod_pids(&dir);

    let holder = format!("in use by another gembatch run (pid {} on", first.id());
    for (flag, refusal) in [
        ("--resume", holder.as_str()),
        ("--start-or-resume", holder.as_str()),
        ("--run-id", "exists already"),
    ] {
        let second = common::run::run(&job, &[flag, "twice"]);
        let words = text(&second);
        assert_eq!(second.status.code(), Some(2), "{flag}: {words}");
        assert!(words.contains(refusal), "{flag}: {words}");
    }
    let escape = common::run::run(&job, &["--resume", "../twice"]);
    assert_eq!(escape.status.code(), Some(2), "{}", text(&escape));
    assert!(text(&escape).contains("--resume"), "{}", text(&escape));

    // A crash, then the same command again (what a retried Kubernetes Job does): it
    // resumes and finishes the run, every row exactly once.
    wait_for_commit(&dir);
    first.kill().unwrap();
    first.wait().unwrap();
    let retry = common::run::run(&job, &["--start-or-resume", "twice"]);
    assert!(retry.status.success(), "{}", text(&retry));
    assert!(text(&retry).contains("resuming"), "{}", text(&retry));
    assert_eq!(Requests::read(&dir).sorted_ids(), expected_ids(200));
}

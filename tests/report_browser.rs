//! The HTML reports in a real browser: headless Chromium (Debian's `chromium` package) opens
//! the page of a real load run (with a watched Deployment's replicas) and of a real batch
//! run from the file system, renders every chart without a console error, and takes a
//! screenshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::stub::{Behaviour, Stub};
use gembatch::results::replicas::{ReplicaSample, write_replicas};

const CHROMIUM: &str = "/usr/bin/chromium";
const MS: Duration = Duration::from_millis(1);

fn chromium(profile: &Path, args: &[&str], page: &Path) -> Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium); .ci/setup does"
    );
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2200",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

fn run_load(url: &str, out: &Path, run_id: &str, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["load", "--url", url, "--run-id", run_id, "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run gembatch load");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Opens `page`, checks the rendered DOM (`expected_charts` charts, at least `min_lines`
/// line paths), and returns the screenshot's path.
fn render(page: &Path, dir: &Path, expected_charts: usize, min_lines: usize) -> PathBuf {
    let dom = chromium(&dir.join("profile-dom"), &["--dump-dom"], page);
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        html.contains("data-status=\"rendered\""),
        "the script did not finish:\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains("data-errors=\"0\""),
        "console errors on the page"
    );
    assert!(
        html.contains(&format!("data-charts=\"{expected_charts}\"")),
        "expected {expected_charts} charts: {:?}",
        html.split("data-charts=")
            .nth(1)
            .map(|rest| &rest[..rest.len().min(6)])
    );
    // Every line chart drew a path, every bar chart its bars.
    assert!(
        html.matches("<path d=\"M").count() >= min_lines,
        "too few lines drawn"
    );
    assert!(html.matches("<rect ").count() >= 2, "no bars drawn");

    let shot = dir.join("screenshot.png");
    let output = chromium(
        &dir.join("profile-shot"),
        &[&format!("--screenshot={}", shot.display())],
        page,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let size = std::fs::metadata(&shot).expect("a screenshot").len();
    assert!(
        size > 50_000,
        "a {size}-byte screenshot is too plain for a page of charts"
    );
    shot
}

#[test]
fn the_report_renders_its_charts_in_headless_chromium() {
    let failing = |n: u64| {
        if n % 10 == 9 {
            Behaviour::Status(503)
        } else {
            Behaviour::Stream {
                ttft: Duration::from_millis(10 + n % 7),
                gap: 2 * MS,
                tokens: 4,
                usage: true,
            }
        }
    };
    let stub = Stub::start(failing);
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    run_load(
        &stub.url,
        &first,
        "first",
        &[
            "--max-users",
            "3",
            "--step-size",
            "1",
            "--step-duration",
            "1s",
            "--warmup",
            "500ms",
        ],
    );
    run_load(
        &stub.url,
        &second,
        "second",
        &[
            "--max-users",
            "3",
            "--step-size",
            "1",
            "--requests-per-user",
            "5",
        ],
    );

    // The first run as if it had watched a Deployment scaling 1 -> 3 (the samples a
    // `--watch-deployment` run writes; tests/kubernetes.rs records real ones): the report,
    // rebuilt from the files, adds the replicas chart under the timeline.
    let samples: Vec<ReplicaSample> = (0..8)
        .map(|i| ReplicaSample {
            t_s: i as f64 * 0.5,
            spec_replicas: Some(if i < 3 { 1 } else { 3 }),
            replicas: Some(if i < 4 { 1 } else { 3 }),
            ready_replicas: Some(if i < 5 { 1 } else { 3 }),
            hpa_current: Some(1),
            hpa_desired: (i != 6).then_some(3),
        })
        .collect();
    let origin = gembatch::results::origin::RunOrigin::now("first");
    write_replicas(&first, &origin, &samples).unwrap();
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .arg("report")
        .arg(&first)
        .output()
        .unwrap();
    assert!(rebuilt.status.success());
    let shot = render(&first.join("results_viewer.html"), &first, 6, 9);
    eprintln!("screenshot: {}", shot.display());

    let compare = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .arg("report")
        .arg(&first)
        .arg("--compare")
        .arg(&second)
        .output()
        .unwrap();
    assert!(compare.status.success());
    let page = PathBuf::from(String::from_utf8(compare.stdout).unwrap().trim());
    let compared = dir.path().join("compared");
    std::fs::create_dir_all(&compared).unwrap();
    render(&page, &compared, 6, 9);
}

#[test]
fn the_batch_report_renders_its_charts_in_headless_chromium() {
    let answer = |n: u64| Behaviour::Stream {
        ttft: Duration::from_millis(5 + n % 7),
        gap: 2 * MS,
        tokens: 4,
        usage: true,
    };
    // Row 13 is refused by either pod: the errors chart has a bar.
    let script = move |n: u64, body: &str| {
        if body.contains("number 13\"") {
            Behaviour::Status(400)
        } else {
            answer(n)
        }
    };
    let (a, b) = (Stub::start_by_body(script), Stub::start_by_body(script));
    let space = common::run::Workspace::new();
    let dataset = space.dataset(300);
    let job = space.job(&dataset, "shard_size: 25\nconcurrency_per_pod: 3");
    let endpoints = format!("{},{}", a.url, b.url);
    let output = common::run::run(&job, &["--endpoints", &endpoints, "--run-id", "b"]);
    common::run::assert_success(&output);
    let dir = space.run_dir("b");
    // Throughput over time, per pod, latency distribution, errors.
    let shot = render(&dir.join("report.html"), &dir, 4, 5);
    eprintln!("screenshot: {}", shot.display());
}

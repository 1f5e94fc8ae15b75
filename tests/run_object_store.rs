//! `gembatch run` with its dataset and results in a bucket (`s3://` on moto's server,
//! `gs://` on a fixture playing Cloud Storage's XML API): the bucket alone is enough to
//! resume, every row ends with one result whatever is killed, and two runners on one run
//! keep each shard once through the store's create-only writes.

mod common;

use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::buckets::{FakeGcs, MotoS3, TestBucket};
use common::run::{Requests, Workspace, assert_success, expected_ids, text};
use common::stub::{Behaviour, Stub};

const ROWS: usize = 300;
const SHARD_SIZE: usize = 20;

fn stub() -> Stub {
    Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(3),
        gap: Duration::from_millis(2),
        tokens: 4,
        usage: true,
    })
}

/// Uploads a dataset of `rows` rows to `datasets/requests.jsonl` and writes a job reading
/// it with its results under `results/`.
fn bucket_job(space: &Workspace, bucket: &dyn TestBucket, rows: usize) -> std::path::PathBuf {
    let local = space.dataset(rows);
    bucket.put("datasets/requests.jsonl", std::fs::read(local).unwrap());
    std::fs::create_dir(space.dir.path().join("tmp")).unwrap();
    space.file(
        "job.yaml",
        &format!(
            "name: test\ndataset:\n  path: {}\noutput: {}\nshard_size: {SHARD_SIZE}\nconcurrency_per_pod: 4\n",
            bucket.url("datasets/requests.jsonl"),
            bucket.url("results"),
        ),
    )
}

/// `gembatch run` with the bucket's credentials, its temporary folders in the workspace's
/// `tmp/` (the job's sibling), where a test can see what a killed runner left.
fn gembatch(job: &Path, args: &[&str], bucket: &dyn TestBucket) -> std::process::Command {
    let mut command = common::run::command(job, args);
    command.envs(bucket.env()).env("TMPDIR", scratch_dir(job));
    command
}

/// The runners' `$TMPDIR`.
fn scratch_dir(job: &Path) -> std::path::PathBuf {
    job.parent().unwrap().join("tmp")
}

/// What is in the runners' `$TMPDIR`, sorted.
fn scratch_left(job: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(scratch_dir(job))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn run(job: &Path, args: &[&str], bucket: &dyn TestBucket) -> Output {
    gembatch(job, args, bucket)
        .output()
        .expect("run gembatch run")
}

fn spawn(job: &Path, args: &[&str], bucket: &dyn TestBucket) -> Child {
    gembatch(job, args, bucket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start gembatch run")
}

/// The shards whose ledger entries are in the bucket.
fn committed(bucket: &dyn TestBucket, run_id: &str) -> Vec<u64> {
    bucket
        .keys(&format!("results/{run_id}/ledger/"))
        .iter()
        .filter_map(|key| key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
        .collect()
}

/// `requests.parquet` of the run, read from the bucket.
fn bucket_requests(bucket: &dyn TestBucket, run_id: &str) -> Requests {
    read_rows(bucket, &format!("results/{run_id}/requests.parquet"))
}

/// The rows of the Parquet object `key` (`requests.parquet` or a shard: same columns).
fn read_rows(bucket: &dyn TestBucket, key: &str) -> Requests {
    let folder = tempfile::tempdir().unwrap();
    let bytes = bucket
        .get(key)
        .unwrap_or_else(|| panic!("{key} in the bucket"));
    std::fs::write(folder.path().join("requests.parquet"), bytes).unwrap();
    Requests::read(folder.path())
}

/// The key of the shard object that shard `shard`'s ledger entry names.
fn entry_object(bucket: &dyn TestBucket, run_id: &str, shard: usize) -> String {
    let key = format!("results/{run_id}/ledger/{shard:06}.json");
    let entry = bucket
        .get(&key)
        .unwrap_or_else(|| panic!("{key} in the bucket"));
    let entry: serde_json::Value = serde_json::from_slice(&entry).unwrap();
    format!("results/{run_id}/{}", entry["object"].as_str().unwrap())
}

/// Kills a runner `kills` times at random points after its first commit, resumes it to
/// the end each time from the bucket alone (every runner works in a fresh temporary copy),
/// and checks one result per row, no committed shard redone, and no stray shard object.
fn killed_runners_resume_from_the_bucket(bucket: &dyn TestBucket, kills: usize, seed: u64) {
    use rand::{Rng, SeedableRng};
    let space = Workspace::new();
    let stub = stub();
    let job = bucket_job(&space, bucket, ROWS);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed: Vec<(f64, Vec<u64>)> = Vec::new();
    for attempt in 0..kills {
        let flag = if attempt == 0 { "--run-id" } else { "--resume" };
        let mut child = spawn(&job, &["--endpoints", &stub.url, flag, "crashy"], bucket);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while committed(bucket, "crashy").len() <= attempt {
            assert!(
                std::time::Instant::now() < deadline,
                "no shard committed in 60 s"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the runner ended early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..150)));
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        killed.push((at, committed(bucket, "crashy")));
    }
    let shards = ROWS.div_ceil(SHARD_SIZE);
    assert!(
        killed.iter().any(|(_, done)| done.len() < shards),
        "some kill landed mid-run: {killed:?}"
    );
    // A killed runner cannot remove its dataset copy and working copy; each later runner
    // removes those its predecessors left, so only the last one's are there.
    let left = scratch_left(&job);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("gembatch-dataset-"), "{left:?}");
    assert!(left[1].starts_with("gembatch-run-"), "{left:?}");
    let output = run(
        &job,
        &["--endpoints", &stub.url, "--resume", "crashy"],
        bucket,
    );
    assert_success(&output);
    let said = text(&output);
    let url = bucket.url("results/crashy");
    assert!(said.contains(&format!("results in {url}")), "{said}");
    assert!(said.contains("committed shards from"), "{said}");
    assert!(said.contains("ended without cleaning up"), "{said}");
    assert_eq!(scratch_left(&job), Vec::<String>::new());

    let requests = bucket_requests(bucket, "crashy");
    assert_eq!(
        requests.sorted_ids(),
        expected_ids(ROWS),
        "one result per row"
    );
    assert!(requests.strs("status").iter().all(|s| s == "ok"));
    let shard_of = requests.table.u64s("shard").unwrap();
    let finished = requests.table.instants("finished_at").unwrap();
    for (killed_at, done) in &killed {
        for (shard, finished) in shard_of.iter().zip(&finished) {
            if done.contains(&shard.unwrap()) {
                assert!(finished.unwrap() < *killed_at, "shard {shard:?} was redone");
            }
        }
    }
    // Each shard has one entry naming one object, and no other shard object is left.
    assert_eq!(committed(bucket, "crashy").len(), shards);
    let mut named: Vec<String> = (0..shards)
        .map(|shard| entry_object(bucket, "crashy", shard))
        .collect();
    named.sort();
    assert_eq!(bucket.keys("results/crashy/shards/"), named);
    for output in ["summary.parquet", "output.jsonl", "report.html", "run.json"] {
        let key = format!("results/crashy/{output}");
        assert!(bucket.get(&key).is_some(), "{key} is in the bucket");
    }
}

#[test]
fn a_run_kept_in_s3_resumes_from_the_bucket_alone_after_kills() {
    let s3 = MotoS3::start("gembatch-test");
    killed_runners_resume_from_the_bucket(&s3, 3, 5);
}

#[test]
fn a_run_kept_in_cloud_storage_resumes_from_the_bucket_alone_after_kills() {
    let gcs = FakeGcs::start("gembatch-test");
    killed_runners_resume_from_the_bucket(&gcs, 3, 9);
}

#[test]
fn a_run_kept_in_cloud_storage_over_https_trusts_the_systems_roots() {
    let gcs = FakeGcs::start_tls("gembatch-tls");
    assert!(gcs.endpoint.starts_with("https://"));
    let space = Workspace::new();
    let stub = stub();
    let job = bucket_job(&space, &gcs, 60);
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "tls"], &gcs);
    assert_success(&output);
    let requests = bucket_requests(&gcs, "tls");
    assert_eq!(requests.sorted_ids(), expected_ids(60));
    // Without the test CA among the roots, the store's certificate is refused.
    let untrusted = gembatch(&job, &["--endpoints", &stub.url, "--run-id", "tls-2"], &gcs)
        .env("SSL_CERT_FILE", "/dev/null")
        .output()
        .unwrap();
    let said = text(&untrusted);
    assert!(!untrusted.status.success(), "{said}");
    assert!(
        said.contains("cannot read gs://gembatch-tls/datasets/requests.jsonl"),
        "{said}"
    );
}

#[test]
fn a_create_whose_answer_is_lost_is_found_as_this_runners_own() {
    let gcs = FakeGcs::start("gembatch-lost");
    let space = Workspace::new();
    let stub = stub();
    let job = bucket_job(&space, &gcs, 60);
    // Every create of the run (run.json, then three shard objects and their three ledger
    // entries) is made but answered 503: object_store tries again and meets the
    // precondition on its own object.
    gcs.lose_answers_to_creates(7);
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", "lost"], &gcs);
    assert_success(&output);
    assert_eq!(gcs.answers_left_to_lose(), 0, "every lost answer was met");
    let said = text(&output);
    assert!(
        !said.contains("committed first by another runner"),
        "{said}"
    );
    let requests = bucket_requests(&gcs, "lost");
    assert_eq!(requests.sorted_ids(), expected_ids(60));
    for shard in 0..60usize.div_ceil(SHARD_SIZE) {
        let object = entry_object(&gcs, "lost", shard);
        assert!(
            gcs.get(&object).is_some(),
            "{object}, named by shard {shard}'s entry, is kept"
        );
    }
}

#[test]
fn two_runners_on_one_run_in_s3_keep_each_shard_once() {
    let s3 = MotoS3::start("gembatch-race");
    two_runners_keep_each_shard_once(&s3);
}

#[test]
fn two_runners_on_one_run_in_cloud_storage_keep_each_shard_once() {
    let gcs = FakeGcs::start("gembatch-race");
    two_runners_keep_each_shard_once(&gcs);
}

/// Starts two runners of one run at once: each shard's rows are those of the runner whose
/// create-only ledger entry won, and the outputs hold exactly those.
fn two_runners_keep_each_shard_once(bucket: &dyn TestBucket) {
    let space = Workspace::new();
    // Slow enough (about 2 s for the batch) that the second runner starts well before the
    // first could finish alone.
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(20),
        gap: Duration::from_millis(2),
        tokens: 4,
        usage: true,
    });
    let job = bucket_job(&space, bucket, ROWS);
    let args = ["--endpoints", &stub.url, "--start-or-resume", "race"];
    let runners = [spawn(&job, &args, bucket), spawn(&job, &args, bucket)];
    let mut said = String::new();
    for runner in runners {
        let output = runner.wait_with_output().unwrap();
        assert_success(&output);
        said += &text(&output);
    }
    // Both runners served rows of the same shards: each committed some, and lost the
    // create of others to the other runner (or the batch would have been served once).
    assert!(
        stub.served() > ROWS as u64,
        "the runners overlapped: {} requests for {ROWS} rows",
        stub.served()
    );
    assert!(said.contains("committed first by another runner"), "{said}");
    let requests = bucket_requests(bucket, "race");
    assert_eq!(
        requests.sorted_ids(),
        expected_ids(ROWS),
        "one result per row"
    );
    assert_eq!(committed(bucket, "race").len(), ROWS.div_ceil(SHARD_SIZE));
    // The outputs hold the very rows the ledger's objects hold: had both runners' creates
    // of one entry succeeded, the last to publish would show its own rows for a shard
    // whose entry names the other's.
    let mut kept = Vec::new();
    for shard in 0..ROWS.div_ceil(SHARD_SIZE) {
        let object = entry_object(bucket, "race", shard);
        kept.extend(rows_and_finish_times(&read_rows(bucket, &object)));
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows_and_finish_times(&requests), kept);
}

/// Each row's id and finish time, by id.
fn rows_and_finish_times(requests: &Requests) -> Vec<(String, u64)> {
    let finished = requests.table.instants("finished_at").unwrap();
    let mut rows: Vec<(String, u64)> = requests
        .strs("id")
        .into_iter()
        .zip(finished)
        .map(|(id, at)| (id, (at.unwrap() * 1e6) as u64))
        .collect();
    rows.sort();
    rows
}

#[test]
fn mistakes_about_a_bucket_name_what_is_wrong() {
    let s3 = MotoS3::start("gembatch-mistakes");
    let space = Workspace::new();
    let stub = stub();
    let job = bucket_job(&space, &s3, 40);
    let failure = |args: &[&str], expected: &str| {
        let output = run(&job, args, &s3);
        assert!(!output.status.success(), "{args:?} failed");
        let said = text(&output);
        assert!(said.contains(expected), "{args:?}: {said}");
    };
    let done = run(&job, &["--endpoints", &stub.url, "--run-id", "done"], &s3);
    assert_success(&done);
    failure(
        &["--endpoints", &stub.url, "--run-id", "done"],
        "s3://gembatch-mistakes/results/done exists already",
    );
    failure(
        &["--endpoints", &stub.url, "--resume", "nosuch"],
        "no run to resume at s3://gembatch-mistakes/results/nosuch",
    );
    failure(
        &["--endpoints", &stub.url, "--out", "ftp://host/results"],
        "field `output`: ftp://host/results: `ftp://` is not a store",
    );
    failure(
        &["--dataset", "s3://gembatch-mistakes/datasets/missing.jsonl"],
        "cannot read s3://gembatch-mistakes/datasets/missing.jsonl: no such object",
    );
    // The dataset object changed under the run: the resume is refused.
    let changed = space.dataset(41);
    s3.put("datasets/requests.jsonl", std::fs::read(changed).unwrap());
    failure(
        &["--endpoints", &stub.url, "--resume", "done"],
        "cannot resume s3://gembatch-mistakes/results/done: the dataset changed",
    );
}

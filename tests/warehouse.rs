//! gembatch's Parquet tables as a warehouse loads them: every table of a batch run and of
//! its load verification read by pyarrow and DuckDB (the project's Python environment),
//! with signed integers only, instants as UTC microsecond timestamps at the run's real
//! wall-clock time, `run_id` first on every row, and the README's DuckDB query run on them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::python::venv_bin;
use common::run::{Workspace, assert_success, run};
use common::stub::{Behaviour, Stub};
use gembatch::results::origin::RunOrigin;
use gembatch::results::replicas::{ReplicaSample, write_replicas};
use serde_json::Value;

const RUN_ID: &str = "nightly-1";
const ROWS: usize = 60;

fn unix_micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The README's DuckDB query over batch runs' `requests.parquet`.
fn readme_query() -> String {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let after = readme
        .split("<!-- warehouse-query -->")
        .nth(1)
        .expect("the README marks its warehouse query");
    let block = after.split("```sql\n").nth(1).expect("an sql block");
    block.split("```").next().unwrap().to_string()
}

/// What `tests/data/warehouse_read.py` makes of `files` under `root`, and `query`'s rows.
fn read_as_a_warehouse(root: &Path, query: &str, files: &[&str]) -> Value {
    let script = std::fs::canonicalize("tests/data/warehouse_read.py").unwrap();
    let output = Command::new(venv_bin("python"))
        .arg(script)
        .arg(root)
        .arg(query)
        .args(files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn every_table_loads_into_a_warehouse_with_signed_integers_utc_timestamps_and_its_run_id() {
    let space = Workspace::new();
    let stub = Stub::start(|_| Behaviour::Stream {
        ttft: Duration::from_millis(5),
        gap: Duration::from_millis(5),
        tokens: 4,
        usage: true,
    });
    let dataset = space.dataset(ROWS);
    let job = space.job(
        &dataset,
        "shard_size: 20\nload_verification: {users: 1, duration: 1s, output_tokens: 4}",
    );
    let before = SystemTime::now();
    let output = run(&job, &["--endpoints", &stub.url, "--run-id", RUN_ID]);
    assert_success(&output);
    // A `--watch-deployment` run's samples, through the writer the load run uses.
    let load_run = format!("{RUN_ID}-load");
    let load_dir = space.run_dir(RUN_ID).join("load");
    let sample = ReplicaSample {
        t_s: 0.5,
        replicas: Some(2),
        ..ReplicaSample::default()
    };
    write_replicas(&load_dir, &RunOrigin::now(&load_run), &[sample]).unwrap();
    let after = SystemTime::now() + Duration::from_secs(1);

    let tables = [
        ("requests.parquet", RUN_ID),
        ("summary.parquet", RUN_ID),
        ("load/requests.parquet", load_run.as_str()),
        ("load/steps.parquet", load_run.as_str()),
        ("load/replicas.parquet", load_run.as_str()),
    ];
    let files: Vec<String> = tables
        .iter()
        .map(|(file, _)| format!("results/{RUN_ID}/{file}"))
        .collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let read = read_as_a_warehouse(space.dir.path(), &readme_query(), &files);

    for ((file, run_id), path) in tables.iter().zip(&files) {
        let table = &read["tables"][path];
        assert!(table["rows"].as_u64().unwrap() > 0, "{file}: no rows");
        assert_eq!(table["columns"][0], "run_id", "{file}");
        assert_eq!(table["run_ids"], serde_json::json!([run_id]), "{file}");
        let arrow = table["arrow"].as_object().unwrap();
        for (column, kind) in arrow {
            let kind = kind.as_str().unwrap();
            let duck = table["duckdb"][column].as_str().unwrap();
            assert!(
                !kind.starts_with("uint") && !duck.starts_with('U'),
                "{file}: `{column}` is {kind} ({duck}): warehouses have no unsigned integers"
            );
            assert!(
                !kind.starts_with("int") || kind == "int64",
                "{file}: `{column}` is {kind}, not int64"
            );
            let instant = column.ends_with("_at") || column == "at";
            if instant {
                assert_eq!(kind, "timestamp[us, tz=UTC]", "{file}: `{column}`");
                assert_eq!(duck, "TIMESTAMP WITH TIME ZONE", "{file}: `{column}`");
                let [low, high] = [0, 1].map(|i| table["instants"][column][i].as_i64().unwrap());
                assert!(
                    unix_micros(before) <= low && high <= unix_micros(after),
                    "{file}: `{column}` spans {low}..{high} µs, outside the run"
                );
            } else {
                assert!(
                    !kind.starts_with("timestamp"),
                    "{file}: `{column}` is {kind}"
                );
            }
        }
    }
    let batch = &read["tables"][files[0]]["columns"];
    for column in ["queued_at", "started_at", "first_token_at", "finished_at"] {
        assert!(
            batch.as_array().unwrap().contains(&Value::from(column)),
            "{column}"
        );
    }
    let load = &read["tables"][files[2]]["columns"];
    for column in [
        "intended_start_at",
        "started_at",
        "first_token_at",
        "ended_at",
    ] {
        assert!(
            load.as_array().unwrap().contains(&Value::from(column)),
            "{column}"
        );
    }

    // The README's query: one group of ok rows, of this run.
    let rows = read["query"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], RUN_ID);
    assert_eq!(rows[0][1], "ok");
    assert_eq!(rows[0][2], ROWS as u64);
    assert!(rows[0][3].as_f64().unwrap() > 0.0, "{rows:?}");
}

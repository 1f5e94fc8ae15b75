//! Every shipped job file parses and passes the checks `gembatch run` makes before it
//! touches anything, so an example can never rot.

use std::path::Path;

use gembatch::commands::check_job_file;
use gembatch::job::Backend;

#[test]
fn every_shipped_job_file_is_valid() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir("jobs").expect("jobs/ exists") {
        let path = entry.expect("readable entry").path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            let job =
                check_job_file(&path).unwrap_or_else(|err| panic!("{}: {err:#}", path.display()));
            checked.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                job,
            ));
        }
    }
    checked.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = checked.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["demo.yaml", "nightly.yaml"]);

    let demo = &checked[0].1;
    assert_eq!(demo.capacity.backend, Backend::Local);
    assert!(
        Path::new(&demo.dataset.path).is_file(),
        "the demo dataset ships"
    );
    let nightly = &checked[1].1;
    assert_eq!(nightly.capacity.backend, Backend::Kubernetes);
    assert_eq!(nightly.capacity.gpus, 10);
    assert!(
        nightly.dataset.path.starts_with("/mnt/gcs"),
        "read through FUSE"
    );
    let output = gembatch::store::StoreUrl::parse(&nightly.output);
    assert_eq!(
        output
            .and_then(Result::ok)
            .map(|url| url.to_string())
            .as_deref(),
        Some("gs://gembatch-results/nightly"),
        "results written to the bucket itself"
    );
}

#[test]
fn a_bad_job_file_names_its_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: x\ndataset:\n  path: d.jsonl\ncapacity:\n  gpus: 2\n  gpu_type: l4\n",
    )
    .unwrap();
    let err = format!("{:#}", check_job_file(&path).unwrap_err());
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("unknown field `gpu_type`"), "{err}");

    std::fs::write(
        &path,
        "name: x\ndataset: {path: d.jsonl}\nload_verification: {users: 2, warp: 9}\n",
    )
    .unwrap();
    let err = format!("{:#}", check_job_file(&path).unwrap_err());
    assert!(err.contains("load_verification"), "{err}");
    assert!(err.contains("unknown field `warp`"), "{err}");
}

//! The cluster and namespace a Kubernetes command works in are chosen as kubectl chooses
//! them: `--context`, else the kubeconfig's current context; `-n`/`--namespace` (for `run`
//! also the job's), else that context's namespace, else `default`. `--dry-run` shows the
//! choice without calling any API server.

use std::path::Path;
use std::process::{Command, Output};

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: team-a
clusters:
- name: nowhere
  cluster: {server: 'https://127.0.0.1:9'}
users:
- name: someone
  user: {token: not-used}
contexts:
- name: team-a
  context: {cluster: nowhere, user: someone, namespace: team-a}
- name: team-b
  context: {cluster: nowhere, user: someone, namespace: team-b}
- name: no-namespace
  context: {cluster: nowhere, user: someone}
";

fn gembatch(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

/// The distinct `namespace:` values of a dry run's objects.
fn namespaces(output: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("namespace: "))
        .map(str::to_string)
        .collect();
    found.dedup();
    found
}

#[test]
fn reserve_and_run_work_in_the_contexts_namespace_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    let reserve = |extra: &[&str]| {
        let mut args = vec!["reserve", "--gpus", "2", "--dry-run", "--run-id", "r1"];
        args.extend(extra);
        namespaces(&gembatch(&kubeconfig, &args))
    };
    assert_eq!(reserve(&[]), ["team-a"]);
    assert_eq!(reserve(&["--context", "team-b"]), ["team-b"]);
    assert_eq!(reserve(&["--context", "no-namespace"]), ["default"]);
    assert_eq!(reserve(&["--context", "team-b", "-n", "mine"]), ["mine"]);
    assert_eq!(
        namespaces(&gembatch(
            Path::new("/nonexistent/kubeconfig"),
            &["reserve", "--gpus", "1", "--dry-run", "--run-id", "r1"],
        )),
        ["default"]
    );

    let dataset = dir.path().join("rows.jsonl");
    std::fs::write(&dataset, "{\"id\": \"a\", \"prompt\": \"hi\"}\n").unwrap();
    let job = dir.path().join("job.yaml");
    let run = |job_namespace: &str, extra: &[&str]| {
        let text = format!(
            "name: ctx\ndataset: {{path: {}}}\ncapacity: {{backend: kubernetes, gpus: 1{job_namespace}}}\n",
            dataset.display()
        );
        std::fs::write(&job, text).unwrap();
        let mut args = vec!["run", job.to_str().unwrap(), "--dry-run", "--run-id", "r2"];
        args.extend(extra);
        namespaces(&gembatch(&kubeconfig, &args))
    };
    assert_eq!(run("", &[]), ["team-a"]);
    assert_eq!(run("", &["--context", "team-b"]), ["team-b"]);
    let in_job = ", kubernetes: {namespace: batch}";
    assert_eq!(run(in_job, &["--context", "team-b"]), ["batch"]);
    assert_eq!(run(in_job, &["--namespace", "flag"]), ["flag"]);
}

#[test]
fn a_context_that_is_not_in_the_kubeconfig_is_a_mistake_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    let output = gembatch(
        &kubeconfig,
        &["reserve", "--gpus", "1", "--dry-run", "--context", "team-z"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("team-z"), "{stderr}");
    let output = gembatch(
        &kubeconfig,
        &["reserve", "--gpus", "1", "-n", "Not_A_Name", "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"Not_A_Name\" is not a namespace name"),
        "{stderr}"
    );
}

//! `gembatch load` and `gembatch run` against a real peer: llama.cpp's OpenAI server
//! (llama-cpp-python's `[server]` extra) on the default model, through both the completions
//! and the chat route.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::default_model_path;
use common::python::venv_bin;
use gembatch::results::table::Table;

/// llama-cpp-python's server; killed when dropped.
struct LlamaServer {
    child: Child,
    url: String,
}

impl LlamaServer {
    fn start() -> LlamaServer {
        let python = venv_bin("python");
        let check = Command::new(&python)
            .args(["-c", "import llama_cpp.server"])
            .output()
            .expect("run the environment's python");
        assert!(
            check.status.success(),
            "llama-cpp-python's server is missing from {}: run .ci/python-venv",
            python.display()
        );
        let port = common::ports::unused_port();
        // Built without llama.cpp's AMX code (.ci/python-venv), so it runs on any x86-64 CPU.
        let mut child = Command::new(&python)
            .args([
                "-m",
                "llama_cpp.server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(["--n_ctx", "2048", "--n_threads", "2"])
            // By default a new request cuts the stream in progress short (after one token),
            // and the chat template is not Gemma's (the model answers with end-of-turn).
            .args([
                "--interrupt_requests",
                "False",
                "--chat_format",
                "gemma",
                "--model",
            ])
            .arg(default_model_path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start llama_cpp.server");
        let url = format!("http://127.0.0.1:{port}");
        // Drain its log so it never blocks on a full pipe.
        let log = child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(log).lines() {});
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "llama_cpp.server did not start");
            assert!(
                child.try_wait().unwrap().is_none(),
                "llama_cpp.server exited"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        LlamaServer { child, url }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn measures_llama_cpp_server_on_both_routes() {
    let server = LlamaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("prompts.jsonl");
    std::fs::write(
        &dataset,
        concat!(
            "{\"id\": \"p\", \"prompt\": \"The capital of France is\"}\n",
            "{\"id\": \"c\", \"messages\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}]}\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "load",
            "--url",
            &server.url,
            "--run-id",
            "llamacpp",
            "--out",
        ])
        .arg(&out)
        .arg("--dataset")
        .arg(&dataset)
        .args([
            "--max-users",
            "2",
            "--step-size",
            "2",
            "--requests-per-user",
            "2",
        ])
        .args([
            "--output-tokens",
            "8",
            "--temperature",
            "0",
            "--slo",
            "error_rate<=0%",
        ])
        .output()
        .expect("run gembatch load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let table = Table::read(&out.join("requests.parquet")).unwrap();
    assert_eq!(table.len(), 4);
    let outcomes = table.strs("outcome").unwrap();
    assert!(
        outcomes.iter().all(|o| o.as_deref() == Some("ok")),
        "{outcomes:?}"
    );
    let tokens = table.u32s("output_tokens").unwrap();
    assert!(
        tokens.iter().all(|t| (1..=8).contains(&t.unwrap())),
        "{tokens:?}"
    );
    let ttft = table.f64s("ttft_s").unwrap();
    let e2e = table.f64s("e2e_s").unwrap();
    for (first, total) in ttft.iter().zip(&e2e) {
        let (first, total) = (first.unwrap(), total.unwrap());
        assert!(first > 0.0 && first <= total, "ttft {first} e2e {total}");
    }
    // llama-cpp-python sends no usage in streams: the tokens are counted chunks.
    let sources = table.strs("token_source").unwrap();
    assert!(
        sources.iter().all(|s| s.as_deref() == Some("counted")),
        "{sources:?}"
    );
    // Rows alternate: even ids are the completion prompt, whose greedy continuation does not
    // stop before 8 tokens, so every one of its streamed chunks must have been counted.
    let ids = table.u64s("id").unwrap();
    let routes = table.strs("route").unwrap();
    let rows = table.strs("row_id").unwrap();
    for (i, id) in ids.iter().enumerate() {
        let (route, row) = if id.unwrap() % 2 == 0 {
            ("completions", "p")
        } else {
            ("chat", "c")
        };
        assert_eq!(
            (routes[i].as_deref(), rows[i].as_deref()),
            (Some(route), Some(row))
        );
    }
    for (id, tokens) in ids.iter().zip(&tokens) {
        if id.unwrap() % 2 == 0 {
            assert_eq!(*tokens, Some(8), "request {id:?}");
        }
    }
    assert!(out.join("results_viewer.html").exists());
}

#[test]
fn runs_a_batch_on_llama_cpp_server_as_an_existing_endpoint() {
    let server = LlamaServer::start();
    let space = common::run::Workspace::new();
    let dataset = space.file(
        "rows.jsonl",
        concat!(
            "{\"id\": \"p1\", \"prompt\": \"The capital of France is\"}\n",
            "{\"id\": \"c1\", \"messages\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}]}\n",
            "{\"custom_id\": \"b1\", \"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": {\"model\": \"x\", \"prompt\": \"One, two,\", \"max_tokens\": 4}}\n",
            "{\"id\": \"p2\", \"prompt\": \"Water boils at\"}\n",
        ),
    );
    let job = space.job(
        &dataset,
        "shard_size: 2\nconcurrency_per_pod: 1\ngeneration: {max_tokens: 8, temperature: 0}",
    );
    let output = common::run::run(&job, &["--endpoints", &server.url, "--run-id", "peer"]);
    common::run::assert_success(&output);
    let dir = space.run_dir("peer");
    let requests = common::run::Requests::read(&dir);
    assert_eq!(requests.sorted_ids(), ["b1", "c1", "p1", "p2"]);
    assert!(requests.strs("status").iter().all(|s| s == "ok"));
    assert!(requests.strs("output").iter().all(|s| !s.is_empty()));
    let lines = common::run::json_lines(&dir.join("output.jsonl"));
    let chat = lines.iter().find(|l| l["custom_id"] == "c1").unwrap();
    assert_eq!(chat["response"]["body"]["object"], "chat.completion");
    assert!(chat["response"]["body"]["choices"][0]["message"]["content"].is_string());
    let limited = lines.iter().find(|l| l["custom_id"] == "b1").unwrap();
    let tokens = limited["response"]["body"]["usage"]["completion_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        (1..=4).contains(&tokens),
        "the row's own max_tokens wins: {tokens}"
    );
}

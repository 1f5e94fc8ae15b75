//! `gembatch serve` end to end over real HTTP on loopback: the official `openai` Python SDK
//! as a client, greedy output equal to `gembatch generate`, concurrency, overload, bad
//! input, disconnects, SIGTERM drain and the API key.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::python::venv_bin;
use common::server::{Server, metric, series};
use serde_json::{Value, json};

const PROMPT: &str = "The capital of France is";

fn client() -> reqwest::Client {
    gembatch::client::tls::install_crypto_provider();
    reqwest::Client::new()
}

async fn post(url: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client().post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

async fn metrics(server: &Server) -> String {
    client()
        .get(server.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `check` holds for the metrics text, at most `limit`.
async fn until_metrics(server: &Server, limit: Duration, check: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check(&metrics(server).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Starts a streaming completion and returns its response once the first chunk arrived.
async fn started_stream(server: &Server, max_tokens: u32) -> (reqwest::Response, String) {
    let body =
        json!({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": true});
    let mut response = client()
        .post(server.at("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    (response, String::from_utf8_lossy(&first).into_owned())
}

/// Prometheus' own Python client parses `/metrics` (from stdin) and prints its families as
/// JSON: `{name: {"type": ..., "samples": [[name, labels, value], ...]}}`.
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {
    family.name: {"type": family.type, "samples": [[s.name, s.labels, s.value] for s in family.samples]}
    for family in text_string_to_metric_families(sys.stdin.read())
}
print(json.dumps(families))
"#;

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_vllms_names_and_labels() {
    let server = Server::start(&["--served-model-name", "gemma \"test\""], &[]);
    let completions = server.at("/v1/completions");
    for _ in 0..2 {
        let body = json!({"prompt": PROMPT, "max_tokens": 5, "ignore_eos": true});
        assert_eq!(post(&completions, body).await.0, 200);
    }
    let text = metrics(&server).await;
    let mut parser = Command::new(venv_bin("python"))
        .args(["-c", PARSE_METRICS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut parser.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused:\n{text}"
    );
    let families: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = |family: &str| families[family]["samples"].as_array().unwrap().clone();

    // Every series is labelled with the served model's name, escaped and read back whole.
    for (name, family) in families.as_object().unwrap() {
        for sample in family["samples"].as_array().unwrap() {
            assert_eq!(
                sample[1]["model_name"], "gemma \"test\"",
                "{name}: {sample}"
            );
        }
    }
    // One inter-token gap per token after each request's first: 2 requests of 5 tokens.
    assert_eq!(
        families["gembatch:inter_token_latency_seconds"]["type"],
        "histogram"
    );
    let gaps = samples("gembatch:inter_token_latency_seconds");
    let count = gaps
        .iter()
        .find(|s| s[0] == "gembatch:inter_token_latency_seconds_count")
        .unwrap();
    assert_eq!(count[2], 8.0);
    let per_request = samples("gembatch:request_time_per_output_token_seconds");
    assert!(
        per_request
            .iter()
            .any(|s| s[0].as_str().unwrap().ends_with("_count") && s[2] == 2.0)
    );
    // vLLM's finish reasons, `abort` among them; the deprecated per-request mean is gone.
    assert_eq!(families["gembatch:request_success"]["type"], "counter");
    let reasons: Vec<&str> = families["gembatch:request_success"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1]["finished_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["stop", "length", "abort"]);
    assert!(
        families
            .get("gembatch:time_per_output_token_seconds")
            .is_none()
    );
}

#[test]
fn the_openai_python_sdk_works_against_the_server() {
    // The official OpenAI Python SDK, from the project's environment (.ci/python-venv).
    let python = venv_bin("python");
    let server = Server::start(&[], &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let output = Command::new(&python)
        .args([script, &server.url])
        .output()
        .expect("run the environment's python");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "openai SDK client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all openai SDK checks passed"), "{stdout}");
}

#[tokio::test]
async fn greedy_completion_equals_generate_and_names_the_replica() {
    let server = Server::start(&[], &[("POD_NAME", "gemma-pod-7")]);
    let (status, headers, body) = post(
        &server.at("/v1/completions"),
        json!({"prompt": PROMPT, "max_tokens": 24, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-gembatch-replica"], "gemma-pod-7");
    let model = common::default_model_path();
    let generated = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "generate",
            "--json",
            "--max-tokens",
            "24",
            "--prompt",
            PROMPT,
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let generated: Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(body["choices"][0]["text"], generated["text"]);
    assert_eq!(
        body["usage"]["completion_tokens"],
        generated["output_tokens"]
    );
    assert_eq!(body["usage"]["prompt_tokens"], generated["prompt_tokens"]);
}

#[tokio::test]
async fn concurrent_clients_are_batched_and_all_answered() {
    let server = Server::start(&["--max-batch", "8"], &[]);
    const PROMPTS: [&str; 6] = [
        "Once upon a time",
        "The sky is",
        "Rust is a language",
        "One, two,",
        "Hello",
        "Water boils at",
    ];
    let requests = PROMPTS.iter().enumerate().map(|(i, prompt)| {
        let url = server.at("/v1/completions");
        async move {
            let max_tokens = 8 + 4 * i as u64;
            let (status, _, body) = post(
                &url,
                json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7,
                       "seed": i, "ignore_eos": true}),
            )
            .await;
            (status, body, max_tokens)
        }
    });
    let all = tokio::spawn(futures_util::future::join_all(requests));
    let batched = until_metrics(&server, Duration::from_secs(10), |m| {
        metric(m, "gembatch:num_requests_running") >= 2.0
    })
    .await;
    assert!(batched, "requests were never decoded together");
    for (status, body, max_tokens) in all.await.unwrap() {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], max_tokens, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
    // The engine lowers the gauge right after answering, within one step.
    assert!(
        until_metrics(&server, Duration::from_secs(2), |m| {
            metric(m, "gembatch:num_requests_running") == 0.0
        })
        .await
    );
    let text = metrics(&server).await;
    assert!(metric(&text, "gembatch:generation_tokens_total") >= 6.0);
    assert!(
        series(
            &text,
            "gembatch:request_success_total",
            "finished_reason=\"length\""
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::start(&["--max-batch", "1", "--max-waiting", "1"], &[]);
    let (_running, _) = started_stream(&server, 400).await;
    let queued_url = server.at("/v1/completions");
    let queued = tokio::spawn(async move {
        post(&queued_url, json!({"prompt": "Hello", "max_tokens": 2}))
            .await
            .0
    });
    assert!(
        until_metrics(&server, Duration::from_secs(5), |m| {
            metric(m, "gembatch:num_requests_waiting") == 1.0
        })
        .await
    );
    let (status, headers, body) = post(
        &server.at("/v1/completions"),
        json!({"prompt": "Hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    drop(_running);
    assert_eq!(
        queued.await.unwrap(),
        200,
        "the queued request is served once there is room"
    );
    let text = metrics(&server).await;
    assert_eq!(
        series(
            &text,
            "gembatch:request_errors_total",
            "class=\"overloaded\""
        ),
        1.0
    );
}

#[tokio::test]
async fn bad_input_gets_400_naming_the_field_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-body-bytes", "4096", "--context", "256"], &[]);
    let completions = server.at("/v1/completions");
    let chat = server.at("/v1/chat/completions");
    let long_prompt = "word ".repeat(400);
    let cases = [
        (
            &completions,
            json!({"prompt": PROMPT, "max_tokens": 0}),
            Some("max_tokens"),
        ),
        (
            &completions,
            json!({"prompt": PROMPT, "max_tokens": 1000}),
            Some("max_tokens"),
        ),
        (
            &completions,
            json!({"prompt": PROMPT, "max_tokens": "many"}),
            Some("max_tokens"),
        ),
        (
            &completions,
            json!({"prompt": PROMPT, "temperature": -2}),
            Some("temperature"),
        ),
        (&completions, json!({"prompt": ""}), Some("prompt")),
        (&completions, json!({"prompt": long_prompt}), Some("prompt")),
        (&completions, json!({"max_tokens": 5}), Some("prompt")),
        (
            &completions,
            json!({"prompt": PROMPT, "model": "gpt-4"}),
            Some("model"),
        ),
        (&completions, json!({"prompt": PROMPT, "n": 17}), Some("n")),
        (
            &completions,
            json!({"prompt": PROMPT, "logprobs": 21}),
            Some("logprobs"),
        ),
        (
            &chat,
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            Some("top_logprobs"),
        ),
        (
            &chat,
            json!({"messages": [{"role": "user", "content": 7}]}),
            Some("messages[0].content"),
        ),
        (
            &chat,
            json!({"messages": [{"role": "model", "content": "x"}]}),
            Some("messages[0].role"),
        ),
    ];
    for (url, body, param) in cases {
        let (status, _, answer) = post(url, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(
            answer["error"]["param"].as_str(),
            param,
            "{body} -> {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let malformed = client()
        .post(&completions)
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let too_big = client()
        .post(&completions)
        .body(format!("{{\"prompt\": \"{}\"}}", "x".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    let error: Value = too_big.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("4096"));

    let (status, _, body) = post(&completions, json!({"prompt": PROMPT, "max_tokens": 3})).await;
    assert_eq!(status, 200, "still serving after bad input: {body}");
    let text = metrics(&server).await;
    assert_eq!(
        series(
            &text,
            "gembatch:request_errors_total",
            "class=\"bad_request\""
        ),
        15.0
    );
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_slot() {
    let server = Server::start(&[], &[]);
    let (response, first) = started_stream(&server, 500).await;
    assert!(first.starts_with("data: "), "{first}");
    assert_eq!(
        metric(&metrics(&server).await, "gembatch:num_requests_running"),
        1.0
    );
    drop(response);
    let freed = until_metrics(&server, Duration::from_secs(2), |m| {
        metric(m, "gembatch:num_requests_running") == 0.0
            && series(
                m,
                "gembatch:request_errors_total",
                "class=\"client_disconnected\"",
            ) == 1.0
            && series(
                m,
                "gembatch:request_success_total",
                "finished_reason=\"abort\"",
            ) == 1.0
    })
    .await;
    assert!(freed, "slot not freed:\n{}", metrics(&server).await);
    let tokens = metric(&metrics(&server).await, "gembatch:generation_tokens_total");
    assert!(tokens < 500.0, "generation stopped early ({tokens} tokens)");
}

#[tokio::test]
async fn sigterm_stops_admitting_finishes_in_flight_and_exits_zero() {
    drains_on_signal("TERM").await;
}

#[tokio::test]
async fn ctrl_c_drains_like_sigterm() {
    drains_on_signal("INT").await;
}

async fn drains_on_signal(signal: &str) {
    let mut server = Server::start(&["--drain-seconds", "60"], &[]);
    let (mut stream, mut received) = started_stream(&server, 120).await;
    server.signal(signal);
    // The signal arrives asynchronously; from then on /ready must say 503: at once on a quiet
    // machine, within 5 s on a loaded one (the model's threads hold both cores), where a
    // server that kept admitting would go on answering 200 for the whole 60 s drain.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ready = 200;
    while ready != 503 && Instant::now() < deadline {
        ready = client()
            .get(server.at("/ready"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503, "/ready after SIGTERM");
    assert_eq!(
        metric(&metrics(&server).await, "gembatch:num_requests_running"),
        1.0,
        "the in-flight request is still running while draining"
    );
    let (status, _, body) = post(&server.at("/v1/completions"), json!({"prompt": "Hi"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("shutting_down"))
    );
    while let Some(chunk) = stream.chunk().await.unwrap() {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        received.contains("\"finish_reason\":\"length\""),
        "{received}"
    );
    assert!(received.trim_end().ends_with("data: [DONE]"));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits after draining");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn an_api_key_guards_everything_but_the_probes() {
    let server = Server::start(&["--api-key", "s3cret"], &[]);
    let health = client().get(server.at("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A kubelet's readiness probe carries no key.
    let ready = client().get(server.at("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let denied = client().get(server.at("/v1/models")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = client()
        .get(server.at("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let models = client()
        .get(server.at("/v1/models"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let models: Value = models.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "gemma-3-270m-q4_k_m");
}

/// `--step-log` writes one line per engine step, and the lines account for every token:
/// each prompt token prefilled once, one decode step per generated token after the first
/// (which comes from the prompt's last logits), and the positions each attended to.
#[tokio::test]
async fn the_step_log_accounts_for_every_token_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps.jsonl");
    let server = Server::start(&["--step-log", log.to_str().unwrap()], &[]);
    let requests = ["Once upon a time", "Rust is a language", "Hello"]
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let url = server.at("/v1/completions");
            async move {
                let body = json!({"prompt": prompt, "max_tokens": 6 + 5 * i,
                                  "temperature": 0, "ignore_eos": true});
                post(&url, body).await
            }
        });
    let (mut prompt_tokens, mut decode_steps, mut prefill_context, mut decode_context) =
        (0, 0, 0, 0);
    for (status, _, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        let p = body["usage"]["prompt_tokens"].as_u64().unwrap();
        let n = body["usage"]["completion_tokens"].as_u64().unwrap();
        prompt_tokens += p;
        decode_steps += n - 1;
        // Prompt token i attends to i + 1 positions; the token decoded at position q to
        // q + 1, for q = p .. p + n - 2.
        prefill_context += p * (p + 1) / 2;
        decode_context += (p..p + n - 1).map(|q| q + 1).sum::<u64>();
    }
    let steps: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let total = |field: &str| {
        steps
            .iter()
            .map(|s| s[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(total("prefill_tokens"), prompt_tokens);
    assert_eq!(total("decode_sequences"), decode_steps);
    assert_eq!(total("prefill_context"), prefill_context);
    assert_eq!(total("decode_context"), decode_context);
    assert!(
        steps
            .iter()
            .any(|s| s["decode_sequences"].as_u64() >= Some(2)),
        "the requests were never decoded together"
    );
    let mut last_start = 0.0;
    for step in &steps {
        let (at, seconds) = (
            step["at_s"].as_f64().unwrap(),
            step["seconds"].as_f64().unwrap(),
        );
        assert!(at >= last_start && seconds > 0.0, "{step}");
        last_start = at;
    }
}

/// A prompt that cannot fit the context however it tokenizes is refused before it is
/// tokenized ("at least"); one that might fit is tokenized and refused with its count.
#[tokio::test]
async fn a_prompt_too_long_to_fit_is_refused_before_tokenizing() {
    let server = Server::start(&["--context", "256"], &[]);
    let completions = server.at("/v1/completions");
    let (status, _, answer) = post(&completions, json!({"prompt": "<".repeat(200_000)})).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("has at least"), "{message}");
    let (status, _, answer) = post(&completions, json!({"prompt": "word ".repeat(400)})).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the prompt has ") && !message.contains("at least"),
        "tokenized, then counted: {message}"
    );
    let (status, _, body) = post(&completions, json!({"prompt": PROMPT, "max_tokens": 3})).await;
    assert_eq!(status, 200, "{body}");
}

/// The chunks of a streamed request, checking that it ends with one `[DONE]`.
async fn streamed(url: &str, body: Value) -> Vec<Value> {
    let text = client()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    assert_eq!(data.iter().filter(|&&d| d == "[DONE]").count(), 1);
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// What one chat choice said and the bytes of its tokens' log-probability entries.
fn chat_choice(choice: &Value) -> (String, Vec<u8>, usize) {
    let content = choice["logprobs"]["content"].as_array().unwrap();
    let bytes: Vec<u8> = content
        .iter()
        .flat_map(|entry| entry["bytes"].as_array().unwrap().clone())
        .map(|byte| byte.as_u64().unwrap() as u8)
        .collect();
    for entry in content {
        let top: Vec<f64> = entry["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .collect();
        assert_eq!(top.len(), 3, "{entry}");
        assert!(top.windows(2).all(|w| w[0] >= w[1]), "{entry}");
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        let mass: f64 = top.iter().map(|lp| lp.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{entry}");
    }
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    (text, bytes, content.len())
}

#[tokio::test]
async fn logprobs_and_several_choices_come_in_openais_shapes_streamed_or_not() {
    let server = Server::start(&[], &[]);
    let chat = server.at("/v1/chat/completions");
    let request = json!({
        "messages": [{"role": "user", "content": "Write one line about the sea."}],
        "max_tokens": 12, "temperature": 0.9, "seed": 11, "n": 3,
        "logprobs": true, "top_logprobs": 3,
    });
    let (status, _, whole) = post(&chat, request.clone()).await;
    assert_eq!(status, 200, "{whole}");
    let choices = whole["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let mut entries = 0;
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        let (text, bytes, count) = chat_choice(choice);
        // Every counted token has its entry, and their bytes spell the answer exactly.
        assert_eq!(String::from_utf8(bytes).unwrap(), text, "{choice}");
        entries += count;
    }
    assert_eq!(whole["usage"]["completion_tokens"], entries);
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "three sampled choices all alike: {texts:?}"
    );

    // Streamed, the same choices arrive interleaved by index, with the same entries (the
    // same seeds in the same batch draw the same tokens).
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let chunks = streamed(&chat, streaming).await;
    for (index, choice) in choices.iter().enumerate() {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].as_array().and_then(|a| a.first()))
            .filter(|c| c["index"] == index)
            .collect();
        assert_eq!(mine[0]["delta"]["role"], "assistant");
        let text: String = mine
            .iter()
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, choice["message"]["content"].as_str().unwrap());
        let content: Vec<Value> = mine
            .iter()
            .filter_map(|c| c["logprobs"]["content"].as_array())
            .flatten()
            .cloned()
            .collect();
        assert_eq!(Value::from(content), choice["logprobs"]["content"]);
        let finish = mine.iter().filter(|c| !c["finish_reason"].is_null());
        assert_eq!(finish.count(), 1);
    }
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &whole["usage"]);

    // Completions: the legacy parallel lists; the tokens spell the text.
    let (status, _, completion) = post(
        &server.at("/v1/completions"),
        json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{completion}");
    let choice = &completion["choices"][0];
    let logprobs = &choice["logprobs"];
    let tokens: Vec<&str> = logprobs["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), choice["text"].as_str().unwrap());
    let offsets: Vec<usize> = tokens
        .iter()
        .scan(0, |offset, token| {
            let at = *offset;
            *offset += token.chars().count();
            Some(at)
        })
        .collect();
    assert_eq!(logprobs["text_offset"], json!(offsets));
    for (position, top) in logprobs["top_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let top = top.as_object().unwrap();
        // Greedy: the sampled token is the most likely, so it is one of the two.
        assert_eq!(top.len(), 2, "{top:?}");
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(logprobs["token_logprobs"][position].as_f64().unwrap(), best);
        assert!(top.contains_key(tokens[position]));
    }
    let (status, _, plain) = post(
        &server.at("/v1/completions"),
        json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(plain["choices"][0]["logprobs"], Value::Null);
    assert_eq!(plain["choices"][0]["text"], choice["text"]);
}

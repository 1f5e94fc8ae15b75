//! The `gembatch` binary end to end: tokenize and generate on the default model, and every
//! user error the foundation names (missing, corrupt, truncated or foreign model file, empty
//! or over-long prompt, bad parameter) exits 2 with a one-line message naming what is wrong.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use common::default_model_path;

fn gembatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(args)
        .env("GEMBATCH_THREADS", "2")
        .output()
        .expect("run gembatch")
}

/// Asserts a user error: exit code 2, one line on stderr containing every `needle`, no panic.
fn assert_user_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
}

/// `gembatch SUBCOMMAND --model <default model> EXTRA...`.
fn on_default_model(subcommand: &str, extra: &[&str]) -> Output {
    let model = default_model_path().display().to_string();
    let mut args = vec![subcommand, "--model", &model];
    args.extend_from_slice(extra);
    gembatch(&args)
}

/// `gembatch generate --model PATH --prompt hi`, for the model-file error cases.
fn generate_with_model(path: &Path) -> Output {
    gembatch(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "hi",
    ])
}

/// `gembatch tokenize --json` on the default model with extra flags; its stdout.
fn tokenize_json(extra: &[&str]) -> String {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = on_default_model("tokenize", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tokenize_json_prints_ids_without_bos_unless_asked() {
    assert_eq!(
        tokenize_json(&["Hello, world!"]),
        r#"{"ids":[9259,236764,1902,236888]}"#
    );
    assert_eq!(
        tokenize_json(&["--bos", "Hello, world!"]),
        r#"{"ids":[2,9259,236764,1902,236888]}"#
    );
}

#[test]
fn tokenize_parses_control_tokens_only_when_asked() {
    assert_eq!(
        tokenize_json(&["--special", "<start_of_turn>user"]),
        r#"{"ids":[105,2364]}"#
    );
    assert_eq!(
        tokenize_json(&["<start_of_turn>user"]),
        r#"{"ids":[236820,3041,236779,1340,236779,887,236813,2364]}"#
    );
}

#[test]
fn generate_json_reports_ids_text_and_speeds() {
    let out = on_default_model(
        "generate",
        &[
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        report["prompt_ids"],
        serde_json::json!([2, 818, 5279, 529, 7001, 563])
    );
    // llama.cpp's greedy continuation of this prompt starts with these eight tokens.
    assert_eq!(
        report["output_ids"],
        serde_json::json!([506, 5279, 529, 506, 2891, 529, 7001, 236761])
    );
    assert_eq!(report["text"], " the capital of the country of France.");
    assert_eq!(report["finish_reason"], "length");
    assert!(report["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_streams_text_to_stdout() {
    let out = on_default_model(
        "generate",
        &["--prompt", "The capital of France is", "--max-tokens", "8"],
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        " the capital of the country of France.\n"
    );
}

#[test]
fn seeded_sampling_reproduces_its_output() {
    let args = [
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-p",
        "0.95",
        "--top-k",
        "40",
        "--seed",
        "42",
        "--json",
    ];
    let run = || -> serde_json::Value {
        serde_json::from_slice(&on_default_model("generate", &args).stdout).unwrap()
    };
    let (first, second) = (run(), run());
    assert_eq!(first["output_ids"], second["output_ids"]);
    assert_eq!(first["output_ids"].as_array().unwrap().len(), 12);
}

/// Every stderr line of `out` as a Cloud Logging object.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line}\n{stderr}"));
            let severity = value["severity"].as_str().unwrap_or_default();
            assert!(
                ["INFO", "NOTICE", "WARNING", "ERROR"].contains(&severity),
                "{line}"
            );
            assert!(
                value["message"].is_string() && value["time"].is_string(),
                "{line}"
            );
            value
        })
        .collect()
}

#[test]
fn with_log_format_json_every_stderr_line_is_a_cloud_logging_object() {
    let model = default_model_path().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["--log-format", "json", "tokenize", "--model", &model, "hi"])
        .env("GEMBATCH_THREADS", "2")
        .env("GEMBATCH_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = json_lines(&out);
    let loaded = lines
        .iter()
        .find(|line| line["message"] == "model loaded")
        .expect("the tracing event, as JSON");
    assert_eq!(loaded["severity"], "INFO");
    assert_eq!(loaded["threads"], 2, "numbers stay numbers");
    let target = loaded["logging.googleapis.com/labels"]["target"]
        .as_str()
        .unwrap();
    assert!(target.starts_with("gembatch"), "{target}");

    // A user error: exit 2, its one line an ERROR naming what is wrong.
    let out = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["tokenize", "--model", "/nonexistent/model.gguf", "hi"])
        .env("GEMBATCH_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    assert_eq!(last["severity"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/model.gguf")
    );

    // A command line clap refuses: one ERROR object too, exit 2, naming the argument.
    let out = gembatch(&["--log-format", "json", "tokenize", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["severity"], "ERROR");
    assert!(lines[0]["message"].as_str().unwrap().contains("--bogus"));
}

/// A step log that cannot be created stops `serve` before the model loads, naming the flag.
#[test]
fn an_unwritable_step_log_is_named() {
    let out = on_default_model(
        "serve",
        &[
            "--listen",
            "127.0.0.1:0",
            "--step-log",
            "/nonexistent/steps.jsonl",
        ],
    );
    assert_user_error(
        &out,
        &["--step-log", "/nonexistent/steps.jsonl", "writable"],
    );
}

#[test]
fn missing_model_file_is_named() {
    let out = generate_with_model(Path::new("/nonexistent/model.gguf"));
    assert_user_error(&out, &["/nonexistent/model.gguf", "--model"]);
}

#[test]
fn corrupt_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    std::fs::write(&path, b"this is not a gguf file at all").unwrap();
    let out = generate_with_model(&path);
    assert_user_error(&out, &["garbage.gguf", "not a GGUF file"]);
}

#[test]
fn truncated_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    let full = std::fs::read(default_model_path()).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let out = generate_with_model(&path);
    assert_user_error(&out, &["truncated.gguf", "tensor"]);
}

/// Writes a small valid GGUF that declares another architecture.
fn write_foreign_gguf(path: &Path) {
    let tensor = QTensor::quantize(
        &Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = gguf_file::Value::String("llama".into());
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut file,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &tensor)],
    )
    .unwrap();
}

#[test]
fn model_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    write_foreign_gguf(&path);
    let out = gembatch(&["tokenize", "--model", path.to_str().unwrap(), "hi"]);
    assert_user_error(&out, &["llama.gguf", "`llama`", "gemma3"]);
}

#[test]
fn empty_prompt_is_refused() {
    let out = on_default_model("generate", &["--prompt", ""]);
    assert_user_error(&out, &["prompt is empty"]);
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let prompt = "word ".repeat(40);
    let out = on_default_model("generate", &["--context", "16", "--prompt", &prompt]);
    assert_user_error(
        &out,
        &[
            "the prompt has",
            "tokens but the context holds 16",
            "--context",
        ],
    );
}

#[test]
fn out_of_range_sampling_parameter_is_named() {
    let out = on_default_model("generate", &["--prompt", "hi", "--top-p", "1.5"]);
    assert_user_error(&out, &["top_p"]);
}

#[test]
fn bench_model_refuses_a_prompt_too_short_to_measure() {
    let out = on_default_model("bench-model", &["--prefill-tokens", "8"]);
    assert_user_error(&out, &["--prefill-tokens", "32"]);
    let out = on_default_model("bench-model", &["--batch", "0"]);
    assert_user_error(&out, &["--batch"]);
}

/// The CPU build (the runner's image) asked for a GPU: exit 2, naming the CUDA build.
#[cfg(not(feature = "cuda"))]
#[test]
fn asking_the_cpu_build_for_a_gpu_names_the_cuda_build() {
    let out = on_default_model("generate", &["--device", "cuda", "--prompt", "Hi"]);
    assert_user_error(
        &out,
        &["--device cuda", "built without CUDA", "--features cuda"],
    );
}

/// The runner's binary starts where there is no NVIDIA driver (the nightly CronJob's pod):
/// it needs no CUDA library, and `run --dry-run` writes the GPU pods' objects, which ask
/// for their GPU and give a 4B model time to load.
#[cfg(not(feature = "cuda"))]
#[test]
fn the_runner_needs_no_gpu_library_and_writes_gpu_pods() {
    let dynamic = common::gembatch_dynamic_section();
    assert!(dynamic.contains("(NEEDED)"), "{dynamic}");
    for library in ["libcuda", "libcudart", "libcublas", "libnvrtc", "libcurand"] {
        assert!(!dynamic.contains(library), "{library} in {dynamic}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["run", "jobs/nightly.yaml", "--dry-run"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run gembatch");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(yaml.contains("kind: ProvisioningRequest"), "{yaml}");
    assert!(yaml.contains("name: GEMBATCH_DEVICE\n") && yaml.contains("value: cuda\n"));
    assert!(yaml.contains("startupProbe:"), "{yaml}");
}

/// `--simd avx2` and `--simd portable` run the code an older CPU runs, with the same bits:
/// every kernel does llama.cpp's arithmetic in llama.cpp's order at every width.
#[test]
fn every_simd_level_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = "Write a short story about a river, a garden and the market of a small \
                  mountain city, told by the water that passes through it every day.";
    let logits = |simd: &str| {
        let out = dir.path().join(format!("{simd}.f32"));
        let run = on_default_model(
            "logits",
            &[
                "--simd",
                simd,
                "--text",
                prompt,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read(out).unwrap()
    };
    let widest = logits("auto");
    assert!(!widest.is_empty());
    for simd in ["avx2", "portable"] {
        assert!(logits(simd) == widest, "--simd {simd} changed the logits");
    }
    let out = on_default_model("logits", &["--simd", "avx3", "--text", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--simd") && stderr.contains("avx2"),
        "{stderr}"
    );
}

/// `gembatch logits` writes one row of the vocabulary per token, and the last row's best
/// token is what greedy generation produces first.
#[test]
fn logits_rows_are_what_generation_picks_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.f32");
    let prompt = "The capital of France is";
    let run = on_default_model(
        "logits",
        &["--text", prompt, "--out", out.to_str().unwrap()],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let (tokens, vocab) = (
        summary["tokens"].as_u64().unwrap() as usize,
        summary["vocab"].as_u64().unwrap() as usize,
    );
    assert_eq!(summary["device"], "cpu");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), tokens * vocab * 4);
    let last: Vec<f32> = bytes[(tokens - 1) * vocab * 4..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let best = gembatch::model::argmax::argmax(&last);
    let generated = on_default_model(
        "generate",
        &["--prompt", prompt, "--max-tokens", "1", "--json"],
    );
    let generated: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(
        generated["output_ids"][0].as_u64(),
        Some(u64::from(best)),
        "{generated}"
    );

    let outside = on_default_model(
        "logits",
        &["--ids", "2,999999999", "--out", out.to_str().unwrap()],
    );
    assert_user_error(&outside, &["--ids", "999999999", "vocabulary"]);
}

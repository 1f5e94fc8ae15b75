//! `benches/step_profile.py` against step logs whose times are known: it must recover the
//! per-step, per-token and per-position costs they were made with, and name a bad line.

use std::path::Path;
use std::process::{Command, Output};

/// Costs the synthetic steps are made of: per step, per prompt token, per decoding
/// sequence (seconds), per decode and per prompt position (seconds).
const COSTS: [f64; 5] = [0.012, 0.0014, 0.0021, 6.0e-6, 1.5e-6];

fn profile(log: &Path) -> Output {
    Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/step_profile.py"))
        .arg(log)
        .output()
        .expect("run python3 benches/step_profile.py")
}

/// A step log of `steps` steps whose counts vary independently.
fn synthetic_log(steps: usize) -> String {
    synthetic_log_with(steps, false)
}

/// [`synthetic_log`], or with `one_prompt_length` every prompt 24 tokens long at
/// position 0, as in a closed loop: its attention then grows only with its tokens.
fn synthetic_log_with(steps: usize, one_prompt_length: bool) -> String {
    let mut at = 0.0;
    let mut lines = String::new();
    for i in 0..steps {
        let decode_sequences = (i * 7) % 13;
        let decode_context = decode_sequences * (100 + (i * 17) % 700);
        let (prefill_tokens, prefill_context) = if one_prompt_length {
            let prompts = if i % 5 == 0 { 1 + i % 4 } else { 0 };
            (24 * prompts, prompts * 24 * 25 / 2)
        } else {
            let tokens = if i % 5 == 0 { 40 + (i * 31) % 400 } else { 0 };
            (tokens, tokens * (tokens + 1) / 2 + tokens * (i % 3) * 50)
        };
        let counts = [
            1.0,
            prefill_tokens as f64,
            decode_sequences as f64,
            decode_context as f64,
            prefill_context as f64,
        ];
        let seconds: f64 = counts.iter().zip(COSTS).map(|(n, c)| n * c).sum();
        lines += &serde_json::json!({
            "at_s": at, "seconds": seconds, "decode_sequences": decode_sequences,
            "decode_context": decode_context, "prefill_tokens": prefill_tokens,
            "prefill_context": prefill_context, "waiting": 0,
        })
        .to_string();
        lines.push('\n');
        at += seconds;
    }
    lines
}

/// The profile of a log made of `text`, which must succeed: its stdout.
fn profile_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps.jsonl");
    std::fs::write(&log, text).unwrap();
    let out = profile(&log);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_fit_recovers_the_costs_the_steps_were_made_of() {
    let stdout = profile_of(&synthetic_log(200));
    for row in [
        "| per step | 12.000 ms per step |",
        "| prompt tokens | 1.400 ms per token |",
        "| decoding sequences | 2.100 ms per sequence |",
        "| decode attention | 6.000 us per position |",
        "| prompt attention | 1.500 us per position |",
    ] {
        assert!(stdout.contains(row), "{row:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("fit R^2 1.000"), "{stdout}");
    assert!(stdout.contains("most 12"), "{stdout}");
}

/// Prompts of one length make their attention a fixed multiple of their tokens: the fit
/// cannot tell the two apart, says so, and gives the tokens the time of both.
#[test]
fn a_term_that_moves_only_with_another_is_named_not_split() {
    let stdout = profile_of(&synthetic_log_with(200, true));
    assert!(
        stdout.contains("| prompt attention | not separable"),
        "{stdout}"
    );
    // 1.4 ms per token plus 1.5 us x 12.5 positions per token.
    assert!(
        stdout.contains("| prompt tokens | 1.419 ms per token |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| per step | 12.000 ms per step |"),
        "{stdout}"
    );
}

#[test]
fn a_line_that_is_not_a_step_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps.jsonl");
    for (bad, needle) in [
        ("listening on http://...", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        (
            r#"{"at_s": 1.0, "seconds": 0.1}"#,
            "no number for prefill_tokens, decode_sequences",
        ),
    ] {
        std::fs::write(&log, synthetic_log(3) + bad + "\n").unwrap();
        let out = profile(&log);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains("steps.jsonl:4:"), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(stderr.contains("--step-log"), "{stderr}");
        assert!(!stderr.contains("Traceback"), "{stderr}");
    }
}

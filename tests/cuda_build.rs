//! The `--features cuda` build on a machine without a GPU (CI; `.ci/cuda-build` runs this
//! with the CUDA toolkit's runtime and link stubs for the driver on LD_LIBRARY_PATH, as
//! NVIDIA's own stub libraries are used: they load, and every driver call reports
//! CUDA_ERROR_STUB_LIBRARY). The GPU arithmetic itself is checked by benches/gpu_check.py
//! on a GPU machine.

#![cfg(feature = "cuda")]

mod common;

use std::process::{Command, Output};

use common::default_model_path;
use gembatch::model::device::{DeviceChoice, device_name};

fn gembatch(args: &[&str]) -> Output {
    let model = default_model_path().display().to_string();
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(args)
        .args(["--model", &model, "--threads", "2"])
        .env_remove("GEMBATCH_DEVICE")
        .output()
        .expect("run the CUDA build of gembatch")
}

/// The driver is a link-time dependency of this build (candle-core links cudarc
/// dynamically), which is why the runner uses the CPU image: see the Dockerfile.
#[test]
fn the_cuda_build_needs_the_driver_library() {
    let dynamic = common::gembatch_dynamic_section();
    assert!(dynamic.contains("[libcuda.so.1]"), "{dynamic}");
}

#[test]
fn asking_for_the_gpu_without_one_exits_2_and_says_what_to_do() {
    let out = gembatch(&["generate", "--device", "cuda", "--prompt", "Hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no usable CUDA GPU"), "{stderr}");
    assert!(stderr.contains("CUDA_ERROR_STUB_LIBRARY"), "{stderr}");
    assert!(stderr.contains("--device cpu"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing generated");
}

#[test]
fn auto_runs_on_the_cpu_and_says_why_and_generates_what_the_cpu_does() {
    let prompt = ["--prompt", "The capital of France is", "--max-tokens", "8"];
    let auto = gembatch(&[&["generate"][..], &prompt[..]].concat());
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert!(stderr.contains("running on the CPU"), "{stderr}");
    assert!(stderr.contains("no usable CUDA GPU"), "{stderr}");
    let cpu = gembatch(&[&["generate", "--device", "cpu"][..], &prompt[..]].concat());
    assert!(cpu.status.success());
    assert!(
        !String::from_utf8_lossy(&cpu.stderr).contains("running on the CPU"),
        "asked for the CPU: no warning"
    );
    assert!(!auto.stdout.is_empty());
    assert_eq!(auto.stdout, cpu.stdout, "the same tokens either way");
}

#[test]
fn the_library_resolves_auto_to_the_cpu_with_the_reason() {
    let chosen = DeviceChoice::Auto.resolve().expect("auto never fails");
    assert_eq!(device_name(&chosen.device), "cpu");
    let reason = chosen
        .fallback
        .expect("a CUDA build says why it is not on a GPU");
    assert!(reason.contains("no usable CUDA GPU"), "{reason}");
    assert!(DeviceChoice::Cuda.resolve().is_err());
}

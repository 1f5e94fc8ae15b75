//! Where the model runs: the `--device` choice, resolved to a candle device once at load,
//! and the weights' dtype there. A GPU pod asks for `cuda` and fails at start when it has no
//! usable GPU; nothing falls back to the CPU without saying so.

use candle_core::{DType, Device};

use super::error::{ModelError, Result};

/// The `--device` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The first CUDA GPU when this build has CUDA and one is usable, else the CPU (with a
    /// warning when a CUDA build finds no GPU).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

/// A resolved device, with why it was chosen when that is worth a warning.
pub struct ChosenDevice {
    /// The device.
    pub device: Device,
    /// Set when `auto` wanted a GPU and fell back to the CPU: the reason.
    pub fallback: Option<String>,
}

impl DeviceChoice {
    /// Resolves the choice: opens the GPU for `cuda` (and for `auto` in a CUDA build).
    pub fn resolve(self) -> Result<ChosenDevice> {
        let on = |device| ChosenDevice {
            device,
            fallback: None,
        };
        match self {
            Self::Cpu => Ok(on(Device::Cpu)),
            Self::Cuda => open_cuda()
                .map(on)
                .map_err(|reason| ModelError::DeviceUnavailable { reason }),
            Self::Auto if !cfg!(feature = "cuda") => Ok(on(Device::Cpu)),
            Self::Auto => Ok(open_cuda().map_or_else(
                |reason| ChosenDevice {
                    device: Device::Cpu,
                    fallback: Some(reason),
                },
                on,
            )),
        }
    }
}

/// The first CUDA GPU, or why there is none.
fn open_cuda() -> std::result::Result<Device, String> {
    if !cfg!(feature = "cuda") {
        return Err(
            "this gembatch was built without CUDA (the CPU image or a plain \
             `cargo build`): use the `cuda` image, or build with `--features cuda`"
                .into(),
        );
    }
    Device::new_cuda(0).map_err(|err| {
        format!(
            "no usable CUDA GPU ({}): give the pod an nvidia.com/gpu and the GPU driver, \
             or pass --device cpu",
            super::error::one_line(&err)
        )
    })
}

/// The `--dtype` flag: what a safetensors checkpoint's matrices are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightDtype {
    /// 32-bit floats (the CPU's default).
    F32,
    /// bfloat16 (a GPU's default; on the CPU, to run the GPU's arithmetic there).
    Bf16,
}

impl WeightDtype {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// How a device is named in logs and summaries: `cpu`, `cuda:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The dtype safetensors weights are kept in on `device`: f32 on the CPU (its kernels are
/// f32), bf16 on a GPU (the checkpoints' own dtype: half the memory, tensor cores).
pub fn safetensors_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_auto_says_why_it_is_not_a_gpu() {
        let cpu = DeviceChoice::Cpu.resolve().unwrap();
        assert!(cpu.device.is_cpu() && cpu.fallback.is_none());
        assert_eq!(device_name(&cpu.device), "cpu");
        let auto = DeviceChoice::Auto.resolve().unwrap();
        if auto.device.is_cpu() && cfg!(feature = "cuda") {
            // A CUDA build without a usable GPU (CI, the runner): the reason is kept.
            assert!(auto.fallback.unwrap().contains("no usable CUDA GPU"));
        } else {
            assert!(auto.fallback.is_none());
        }
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_that_says_what_to_do() {
        match DeviceChoice::Cuda.resolve() {
            Ok(chosen) => assert!(chosen.device.is_cuda(), "cuda resolved to a GPU"),
            Err(err) => {
                let text = err.to_string();
                let hint = if cfg!(feature = "cuda") {
                    "--device cpu"
                } else {
                    "--features cuda"
                };
                assert!(text.contains(hint), "{text}");
                assert!(crate::common::blame::Blame::is_user_error(&err));
            }
        }
    }
}

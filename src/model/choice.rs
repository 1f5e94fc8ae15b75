//! Which model a command loads and how: the `--model`, `--device`, `--dtype`, `--threads`,
//! `--simd`, `--context` and `--dense` flags the model commands share, and the loading they
//! ask for.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::device::{DeviceChoice, WeightDtype, device_name};
use super::simd::{self, SimdChoice};
use super::{LoadOptions, LoadedModel, fetch, load, threads};

/// Which model to load and how.
#[derive(Debug, Args)]
pub struct ModelChoice {
    /// A Gemma 3 GGUF file or safetensors directory [default: the cached Gemma 3 270M,
    /// fetched on first use].
    #[arg(long, env = "GEMBATCH_MODEL")]
    pub model: Option<PathBuf>,
    /// Where the model runs: `auto` takes the first CUDA GPU when this build has CUDA and
    /// one is usable, else the CPU; `cuda` fails when there is none (GPU pods ask for it).
    #[arg(long, env = "GEMBATCH_DEVICE", value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// What a safetensors checkpoint's matrices are read as [default: f32 on the CPU, bf16
    /// on a GPU]. GGUF files keep their own block types.
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
    /// CPU threads [default: the container's CPU limit, else all CPUs].
    #[arg(long, env = "GEMBATCH_THREADS")]
    pub threads: Option<usize>,
    /// Vector instructions the CPU kernels use: `auto` the widest the CPU has; `avx2` or
    /// `portable` run what an older CPU runs (same results, to test or measure its speed).
    #[arg(long, env = "GEMBATCH_SIMD", value_enum, default_value_t)]
    pub simd: SimdChoice,
    /// Most positions (prompt + output) per sequence [default: the model's context].
    #[arg(long)]
    pub context: Option<usize>,
    /// Expand quantized weights to f32: exact arithmetic, the same logits whatever the
    /// batch, at about four times the memory and a fraction of the speed.
    #[arg(long)]
    pub dense: bool,
}

impl ModelChoice {
    /// Configures the threads, resolves the model path (fetching the default model on
    /// first use, its progress lines to `say`) and loads it.
    pub fn load(&self, say: impl FnMut(&str)) -> anyhow::Result<LoadedModel> {
        let threads = threads::configure(self.threads);
        let simd = simd::choose(self.simd).map_err(anyhow::Error::msg)?;
        let path = match &self.model {
            Some(path) => path.clone(),
            None => {
                fetch::ensure_default_model(false, say).context("cannot get the default model")?
            }
        };
        let chosen = self.device.resolve()?;
        if let Some(reason) = &chosen.fallback {
            tracing::warn!(%reason, "running on the CPU");
        }
        let options = LoadOptions {
            device: chosen.device,
            dtype: self.dtype.map(WeightDtype::dtype),
            context: self.context,
            dense: self.dense,
        };
        let loaded = load(&path, &options)?;
        tracing::info!(
            path = %path.display(),
            device = %device_name(&options.device),
            weights = %loaded.weights,
            threads,
            simd = simd.name(),
            seconds = loaded.load_seconds,
            "model loaded"
        );
        Ok(loaded)
    }
}

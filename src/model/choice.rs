//! Which model a command loads and how: the `--model`, `--threads`, `--context` and
//! `--dense` flags the model commands share, and the loading they ask for.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{LoadOptions, LoadedModel, default_device, fetch, load, threads};

/// Which model to load and how.
#[derive(Debug, Args)]
pub struct ModelChoice {
    /// A Gemma 3 GGUF file or safetensors directory [default: the cached Gemma 3 270M,
    /// fetched on first use].
    #[arg(long, env = "GEMBATCH_MODEL")]
    pub model: Option<PathBuf>,
    /// CPU threads [default: the container's CPU limit, else all CPUs].
    #[arg(long, env = "GEMBATCH_THREADS")]
    pub threads: Option<usize>,
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
        let path = match &self.model {
            Some(path) => path.clone(),
            None => {
                fetch::ensure_default_model(false, say).context("cannot get the default model")?
            }
        };
        let options = LoadOptions {
            device: default_device(),
            context: self.context,
            dense: self.dense,
        };
        let loaded = load(&path, &options)?;
        tracing::info!(path = %path.display(), threads, seconds = loaded.load_seconds, "model loaded");
        Ok(loaded)
    }
}

//! Model loading shared by the subcommands: thread set-up, default-model fetch, messages.

use anyhow::Context;

use crate::cli::ModelArgs;
use crate::model::{self, LoadOptions, LoadedModel, fetch, threads};

/// Configures threads, resolves the model path (fetching the default model on first use)
/// and loads it.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<LoadedModel> {
    let threads = threads::configure(args.threads);
    let path = match &args.model {
        Some(path) => path.clone(),
        None => fetch::ensure_default_model(false, |line| eprintln!("{line}"))
            .context("cannot get the default model")?,
    };
    let options = LoadOptions {
        device: model::default_device(),
        context: args.context,
        dense: args.dense,
    };
    let loaded = model::load(&path, &options)?;
    tracing::info!(path = %path.display(), threads, seconds = loaded.load_seconds, "model loaded");
    Ok(loaded)
}

//! `gembatch fetch-model`: download, verify and cache the default model.

use crate::cli::FetchModelArgs;
use crate::model::fetch;

/// Runs the subcommand.
pub fn run(args: FetchModelArgs) -> anyhow::Result<()> {
    let path = fetch::ensure_default_model(args.force, |line| eprintln!("{line}"))?;
    println!("{}", path.display());
    Ok(())
}

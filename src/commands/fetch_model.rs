//! `gembatch fetch-model`: download, verify and cache the default model, and optionally
//! write its tokenizer as a `tokenizer.json`.

use crate::cli::FetchModelArgs;
use crate::common::say;
use crate::model::{fetch, load_tokenizer};

/// Runs the subcommand.
pub fn run(args: FetchModelArgs) -> anyhow::Result<()> {
    let path = fetch::ensure_default_model(args.force, |line| say::info(line))?;
    if let Some(file) = &args.tokenizer_json {
        let (tokenizer, _context) = load_tokenizer(&path)?;
        tokenizer.save(file)?;
        say::info(format!("wrote the tokenizer to {}", file.display()));
    }
    println!("{}", path.display());
    Ok(())
}

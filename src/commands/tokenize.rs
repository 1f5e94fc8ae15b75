//! `gembatch tokenize`: print the token ids of a text.

use crate::cli::TokenizeArgs;
use crate::common::say;

/// Runs the subcommand.
pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let loaded = args.model.load(|line| say::info(line))?;
    let ids = loaded
        .tokenizer
        .encode(&args.text, args.bos, args.special)?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!("{id}\t{:?}", loaded.tokenizer.decode(&[id])?);
        }
    }
    Ok(())
}

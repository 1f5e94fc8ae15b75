//! `gembatch tokenize`: print the token ids of a text.

use crate::cli::TokenizeArgs;

/// Runs the subcommand.
pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let loaded = args.model.load(|line| eprintln!("{line}"))?;
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

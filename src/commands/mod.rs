//! One module per subcommand; this layer alone prints and wires the library together.

mod bench_model;
mod fetch_model;
mod generate;
mod load;
mod logits;
mod report;
mod reserve;
mod run;
mod run_finish;
mod run_kubernetes;
mod run_progress;
mod run_start;
mod serve;
mod tokenize;

use crate::cli::{Cli, Command};

pub use run::check_job_file;

/// Executes the parsed command line. Call it before the process starts other threads
/// (`main` does): `--simd` may set an environment variable first.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    if let Some(model) = cli.command.model_choice() {
        // Before any thread starts: it may set an environment variable candle reads.
        crate::model::simd::apply_before_threads(model.simd)?;
    }
    match cli.command {
        Command::Tokenize(args) => tokenize::run(args),
        Command::Generate(args) => generate::run(args),
        Command::FetchModel(args) => fetch_model::run(args),
        Command::BenchModel(args) => bench_model::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Load(args) => load::run(*args),
        Command::Report(args) => report::run(args),
        Command::Run(args) => run::run(*args),
        Command::Reserve(args) => reserve::run_reserve(args),
        Command::Release(args) => reserve::run_release(args),
    }
}

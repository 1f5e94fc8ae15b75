//! `gembatch report`: rebuilds a load run's HTML page from its files, or compares two runs.

use crate::cli::ReportArgs;
use crate::report;

/// Writes the page and prints its path.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let path = match &args.compare {
        None => report::write_report(&args.dir)?,
        Some(other) => report::write_comparison(&args.dir, other)?,
    };
    println!("{}", path.display());
    Ok(())
}

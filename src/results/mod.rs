//! Result files and the row types they hold. The producers (the load generator, the batch
//! runner, the Deployment watch) import these types; this module imports none of them.
//!
//! - `table`: typed tables to Parquet and back;
//! - a load run: `request` (one request), `step` (one step's figures), `load` (their
//!   tables), `load_summary` (`summary.json`), `replicas` (when it watched a Deployment);
//! - a batch run: `batch_record` (one row's result), `batch` (its tables and totals);
//! - `run_id`: run ids; `origin`: a run's id and start, for the columns every table has.

pub mod batch;
pub mod batch_record;
pub mod load;
pub mod load_summary;
pub mod origin;
pub mod replicas;
pub mod request;
pub mod run_id;
pub mod step;
pub mod table;

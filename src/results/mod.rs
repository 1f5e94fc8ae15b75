//! Result files: typed tables to Parquet and back (`table`), the tables of a load run
//! (`load`, and `replicas` when it watched a Deployment) and of a batch run (`batch`).

pub mod batch;
pub mod load;
pub mod replicas;
pub mod run_id;
pub mod table;

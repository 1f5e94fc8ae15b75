//! Result files: typed tables to Parquet and back (`table`), the tables of a load run
//! (`load`) and of a batch run (`batch`).

pub mod batch;
pub mod load;
pub mod run_id;
pub mod table;

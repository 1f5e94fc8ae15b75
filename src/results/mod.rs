//! Result files: typed tables to Parquet and back (`table`), and the tables of a load run
//! (`load`).

pub mod load;
pub mod run_id;
pub mod table;

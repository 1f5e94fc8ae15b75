"""Reads gembatch's Parquet tables as a warehouse would, with pyarrow and DuckDB.

    python warehouse_read.py ROOT QUERY FILE...

Prints one JSON object: for each FILE (relative to ROOT), each column's pyarrow and DuckDB
types, the rows, the distinct run ids, and the earliest and latest instant of each
timestamp column (Unix microseconds, as DuckDB reads them); then the rows QUERY (DuckDB
SQL, run in ROOT) returns.
"""

import json
import os
import sys

import duckdb
import pyarrow.parquet as pq


def quoted(path):
    return "'" + path.replace("'", "''") + "'"


def describe(con, path):
    arrow = pq.read_table(path)
    source = f"read_parquet({quoted(path)})"
    duck = con.execute(f"describe select * from {source}").fetchall()
    instants = {}
    for name, kind, *_ in duck:
        if kind.startswith("TIMESTAMP"):
            low, high = con.execute(
                f'select epoch_us(min("{name}")), epoch_us(max("{name}")) from {source}'
            ).fetchone()
            instants[name] = [low, high]
    run_ids = sorted(
        row[0] for row in con.execute(f"select distinct run_id from {source}").fetchall()
    )
    return {
        "columns": [field.name for field in arrow.schema],
        "arrow": {field.name: str(field.type) for field in arrow.schema},
        "duckdb": {name: kind for name, kind, *_ in duck},
        "rows": arrow.num_rows,
        "run_ids": run_ids,
        "instants": instants,
    }


def main():
    root, query, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.chdir(root)
    con = duckdb.connect()
    tables = {path: describe(con, path) for path in files}
    rows = [list(row) for row in con.execute(query).fetchall()]
    print(json.dumps({"tables": tables, "query": rows}, default=str))


main()

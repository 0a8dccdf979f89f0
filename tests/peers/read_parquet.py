#!/usr/bin/env python3
"""Reads jieneng's Parquet as an outside tool would (DuckDB and pyarrow, files as they are) and
prints JSON: per (account, meter, item) the sum of energy deltas, the number of duplicate keys,
and the column types pyarrow sees.

Usage: read_parquet.py DATA_DIR
"""

import glob
import json
import sys

import duckdb
import pyarrow.parquet as pq

data_dir = sys.argv[1]
pattern = f"{data_dir}/readings/*/*.parquet"
con = duckdb.connect()
src = f"read_parquet('{pattern}', hive_partitioning = true)"
sums = con.execute(
    f"""SELECT account, meter, item, CAST(sum(delta) AS DOUBLE), count(delta), count(*)
        FROM {src} WHERE quantity = 'energy_import'
        GROUP BY ALL ORDER BY ALL"""
).fetchall()
duplicates = con.execute(
    f"SELECT count(*) - count(DISTINCT (account, meter, quantity, ts)) FROM {src}"
).fetchone()[0]
files = sorted(glob.glob(pattern))
table = pq.read_table(files[0])
print(
    json.dumps(
        {
            "energy": [
                {"account": a, "meter": m, "item": i, "sum": s, "deltas": d, "rows": n}
                for a, m, i, s, d, n in sums
            ],
            "duplicates": duplicates,
            "files": len(files),
            "schema": {f.name: str(f.type) for f in table.schema},
            "compression": pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression,
        }
    )
)

#!/usr/bin/env python3
"""Per (meter, quantity) summary of jieneng's stored readings, read by DuckDB from the Parquet
files as they are. Prints JSON: {"rows": [{"meter", "quantity", "rows", "first_ts", "last_ts",
"first_value", "last_value", "delta_sum", "qualities"}]}, timestamps in UTC ms.

Usage: read_rows.py DATA_DIR
"""

import json
import sys

import duckdb

data_dir = sys.argv[1]
# Stored layout 4: every column is what its name says; decimals are read as doubles.
src = f"""(SELECT *, CAST(value AS DOUBLE) AS reading_value
          FROM read_parquet('{data_dir}/readings/*/*.parquet', hive_partitioning = true))"""
rows = duckdb.connect().execute(
    f"""SELECT meter, quantity, count(*),
               epoch_ms(min(ts)), epoch_ms(max(ts)),
               arg_min(reading_value, ts), arg_max(reading_value, ts),
               CAST(sum(delta) AS DOUBLE), list(DISTINCT quality ORDER BY quality)
        FROM {src} GROUP BY ALL ORDER BY ALL"""
).fetchall()
print(
    json.dumps(
        {
            "rows": [
                {
                    "meter": m,
                    "quantity": q,
                    "rows": n,
                    "first_ts": t0,
                    "last_ts": t1,
                    "first_value": v0,
                    "last_value": v1,
                    "delta_sum": d,
                    "qualities": qs,
                }
                for m, q, n, t0, t1, v0, v1, d, qs in rows
            ]
        }
    )
)

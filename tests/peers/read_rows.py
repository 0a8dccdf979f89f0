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
# The stored layout (query/src/storage.rs): value is given, or a decimal
# value_scaled / value_scale, where a step row (only value_scale set) has the row before's
# value_scaled plus round(delta * value_scale). In file order, a run starts at each row with
# value_scaled and sums the steps after it.
src = f"""(SELECT *, coalesce(value, (first_value(value_scaled) OVER run + sum(step) OVER run)
                                 / value_scale) AS reading_value
          FROM (SELECT *, count(value_scaled) OVER (PARTITION BY filename ORDER BY file_row_number)
                          AS run_id
                FROM (SELECT *, CASE WHEN value IS NULL AND value_scaled IS NULL
                                     THEN CAST(round(delta * value_scale) AS BIGINT)
                                     ELSE 0 END AS step
                      FROM read_parquet('{data_dir}/readings/*/*.parquet', hive_partitioning = true,
                                        filename = true, file_row_number = true)))
          WINDOW run AS (PARTITION BY filename, run_id ORDER BY file_row_number
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))"""
rows = duckdb.connect().execute(
    f"""SELECT meter, quantity, count(*),
               epoch_ms(min(ts)), epoch_ms(max(ts)),
               arg_min(reading_value, ts), arg_max(reading_value, ts),
               sum(delta), list(DISTINCT quality ORDER BY quality)
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

#!/usr/bin/env python3
"""jieneng's hourly and daily rollups next to the same sums computed by DuckDB from the raw
readings, both read from the Parquet files as they are. Periods are (start, end]: a reading at
ts counts in the period that ends at or after ts, hence the `- 1` ms below.

Prints JSON {"hourly": {"rollup": [...], "raw": [...]}, "daily": {...}}, each row
[account, category, item, period_start_ms, energy, kgce, intervals, min_delta, max_delta].

Raw sums are plain sums of the stored columns (storage/src/lib.rs, "Stored layout 4"), read as
doubles.

Usage: check_rollups.py DATA_DIR
"""

import json
import sys

import duckdb

data_dir = sys.argv[1]
con = duckdb.connect()
raw = f"read_parquet('{data_dir}/readings/*/*.parquet', hive_partitioning = true)"
out = {}
for period, ms in (("hourly", 3_600_000), ("daily", 86_400_000)):
    rollup = f"read_parquet('{data_dir}/rollups/{period}/*/*.parquet', hive_partitioning = true)"
    out[period] = {
        "rollup": con.execute(
            f"""SELECT account, category, item, epoch_ms(ts), energy, kgce, intervals,
                       min_delta, max_delta
                FROM {rollup} ORDER BY ALL"""
        ).fetchall(),
        "raw": con.execute(
            f"""SELECT account, category, item, (epoch_ms(ts) - 1) // {ms} * {ms} AS start,
                       CAST(sum(delta) AS DOUBLE), CAST(coalesce(sum(kgce), 0) AS DOUBLE),
                       count(delta), CAST(min(delta) AS DOUBLE), CAST(max(delta) AS DOUBLE)
                FROM {raw} WHERE quantity = 'energy_import' AND delta IS NOT NULL
                GROUP BY ALL ORDER BY ALL"""
        ).fetchall(),
    }
print(json.dumps(out))

#!/usr/bin/env python3
"""How many times each (account, meter, quantity, ts) is stored, read by DuckDB from jieneng's
Parquet files as they are. Prints JSON {"rows": N, "keys": {"METER": [ts_ms, ...]},
"duplicates": [[meter, ts_ms, count], ...]}.

Usage: count_keys.py DATA_DIR
"""

import json
import sys

import duckdb

data_dir = sys.argv[1]
src = f"read_parquet('{data_dir}/readings/*/*.parquet', hive_partitioning = true)"
counts = duckdb.connect().execute(
    f"""SELECT meter, epoch_ms(ts), count(*) FROM {src}
        GROUP BY account, meter, quantity, ts ORDER BY ALL"""
).fetchall()
keys = {}
for meter, ts, _ in counts:
    keys.setdefault(meter, []).append(ts)
print(
    json.dumps(
        {
            "rows": sum(n for _, _, n in counts),
            "keys": keys,
            "duplicates": [[m, t, n] for m, t, n in counts if n > 1][:20],
        }
    )
)

#!/usr/bin/env python3
"""Prints every stored reading of a jieneng data directory as JSON rows (pyarrow, files as they
are), sorted by (account, meter, quantity, ts), with ts as integer ms since the epoch.

Usage: dump_parquet.py DATA_DIR
"""

import glob
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

files = sorted(glob.glob(f"{sys.argv[1]}/readings/*/*.parquet"))
tables = [pq.read_table(f) for f in files]
rows = []
for t in tables:
    t = t.set_column(t.schema.get_field_index("ts"), "ts", t.column("ts").cast(pa.int64()))
    rows += t.to_pylist()
rows.sort(key=lambda r: (r["account"], r["meter"], r["quantity"], r["ts"]))
print(json.dumps({"files": len(files), "rows": rows}))

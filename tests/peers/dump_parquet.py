#!/usr/bin/env python3
"""Prints every stored reading of a jieneng data directory as JSON rows (pyarrow, files as they
are), sorted by (account, meter, quantity, ts), with ts as integer ms since the epoch. The
storage's own `gen` column (which flush wrote the row) is not part of a reading and is left out.
value, delta, kgce and kgco2e are stored as decimals (storage/src/lib.rs, "Stored layout 4") and
printed as the doubles they stand for.

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
    if "gen" in t.column_names:
        t = t.drop_columns(["gen"])
    for r in t.to_pylist():
        # Stored layout 4: decimals, read as the doubles they stand for.
        for name in ("value", "delta", "kgce", "kgco2e"):
            if r[name] is not None:
                r[name] = float(r[name])
        rows.append(r)
rows.sort(key=lambda r: (r["account"], r["meter"], r["quantity"], r["ts"]))
print(json.dumps({"files": len(files), "rows": rows}))

#!/usr/bin/env python3
"""Prints every stored reading of a jieneng data directory as JSON rows (pyarrow, files as they
are), sorted by (account, meter, quantity, ts), with ts as integer ms since the epoch. The
storage's own `gen` column (which flush wrote the row) is not part of a reading and is left out.
value, kgce and kgco2e are as the storage documents them (query/src/storage.rs, "Stored
layout"): the file's number where it gives one; else value_scaled / value_scale, where
value_scaled is the file's or (a step) the row before's plus round(delta * value_scale); and
delta times the row's coefficient column. Those storage columns are then dropped.

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
    # The row before's decimal, in file order (steps never cross files).
    previous = None
    for r in t.to_pylist():
        scaled, scale = r.pop("value_scaled", None), r.pop("value_scale", None)
        if r["value"] is not None or scale is None:
            previous = None
        else:
            if scaled is None:
                scaled = previous + round(r["delta"] * scale)
            previous = scaled
            r["value"] = scaled / scale
        for name in ("kgce", "kgco2e"):
            per_unit = r.pop(f"{name}_per_unit", None)
            if r[name] is None and per_unit is not None and r["delta"] is not None:
                r[name] = r["delta"] * per_unit
        rows.append(r)
rows.sort(key=lambda r: (r["account"], r["meter"], r["quantity"], r["ts"]))
print(json.dumps({"files": len(files), "rows": rows}))

#!/usr/bin/env python3
"""Reads jieneng's readings files the plainest way each tool offers (a glob or dataset over the
readings tree, no knowledge of jieneng) and prints JSON per engine (DuckDB, pyarrow, Polars):
per (account, item) sum(delta), sum(kgce), sum(kgco2e) and count(*) of energy readings, the
latest value per meter, the row count, the number of keys seen more than once, and the column
types. Sums are printed as decimal strings, exactly as the engine computed them.

With --dedupe, DuckDB also reads with the rule storage documents for files not compacted yet:
per key the row of the highest gen.

Usage: plain_sums.py DATA_DIR
"""

import json
import sys
from decimal import Decimal

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds

data_dir = sys.argv[1]
tree = f"{data_dir}/readings"
pattern = f"{tree}/*/*.parquet"
ENERGY = "energy_import"


def text(v):
    return None if v is None else str(Decimal(v) if not isinstance(v, Decimal) else v)


def duck(source):
    con = duckdb.connect()
    sums = con.execute(
        f"""SELECT account, item, sum(delta), sum(kgce), sum(kgco2e), count(*)
            FROM {source} WHERE quantity = '{ENERGY}' GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    latest = con.execute(
        f"""SELECT meter, arg_max(value, ts) FROM {source}
            WHERE quantity = '{ENERGY}' GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    rows, keys = con.execute(
        f"SELECT count(*), count(DISTINCT (account, meter, quantity, ts)) FROM {source}"
    ).fetchone()
    types = con.execute(
        f"SELECT column_name, column_type FROM (DESCRIBE SELECT value, delta, kgce, kgco2e FROM {source})"
    ).fetchall()
    return {
        "sums": [[a, i, text(d), text(c), text(o), n] for a, i, d, c, o, n in sums],
        "latest": {m: text(v) for m, v in latest},
        "rows": rows,
        "repeated_keys": rows - keys,
        "types": {c: t for c, t in types},
    }


def duckdb_plain():
    return duck(f"read_parquet('{pattern}', hive_partitioning = true)")


def duckdb_deduped():
    return duck(
        f"""(SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)
             QUALIFY row_number() OVER (PARTITION BY account, meter, quantity, ts
                                        ORDER BY gen DESC) = 1)"""
    )


def pyarrow_dataset():
    table = ds.dataset(tree, format="parquet", partitioning="hive").to_table()
    energy = table.filter(pc.equal(table["quantity"], ENERGY))
    grouped = energy.group_by(["account", "item"]).aggregate(
        [("delta", "sum"), ("kgce", "sum"), ("kgco2e", "sum"), ("ts", "count")]
    )
    sums = sorted(
        [r["account"], r["item"], text(r["delta_sum"]), text(r["kgce_sum"]),
         text(r["kgco2e_sum"]), r["ts_count"]]
        for r in grouped.to_pylist()
    )
    latest = {}
    ordered = energy.sort_by([("meter", "ascending"), ("ts", "ascending")])
    for m, v in zip(ordered["meter"].to_pylist(), ordered["value"].to_pylist()):
        latest[m] = text(v)
    keys = table.group_by(["account", "meter", "quantity", "ts"]).aggregate([]).num_rows
    return {
        "sums": sums,
        "latest": latest,
        "rows": table.num_rows,
        "repeated_keys": table.num_rows - keys,
        "types": {c: str(table.schema.field(c).type) for c in ["value", "delta", "kgce", "kgco2e"]},
    }


def polars_scan():
    lf = pl.scan_parquet(pattern, hive_partitioning=True)
    energy = lf.filter(pl.col("quantity") == ENERGY)
    grouped = (
        energy.group_by(["account", "item"])
        .agg(
            pl.col("delta").sum(),
            pl.col("kgce").sum(),
            pl.col("kgco2e").sum(),
            pl.len().alias("n"),
        )
        .sort(["account", "item"])
        .collect()
    )
    sums = [
        [r["account"], r["item"], text(r["delta"]), text(r["kgce"]), text(r["kgco2e"]), r["n"]]
        for r in grouped.iter_rows(named=True)
    ]
    latest_frame = (
        energy.sort("ts").group_by("meter").agg(pl.col("value").last()).sort("meter").collect()
    )
    latest = {r["meter"]: text(r["value"]) for r in latest_frame.iter_rows(named=True)}
    all_rows = lf.select(pl.len()).collect().item()
    keys = lf.select(["account", "meter", "quantity", "ts"]).unique().select(pl.len()).collect().item()
    schema = lf.collect_schema()
    return {
        "sums": sums,
        "latest": latest,
        "rows": all_rows,
        "repeated_keys": all_rows - keys,
        "types": {c: str(schema[c]) for c in ["value", "delta", "kgce", "kgco2e"]},
    }


out = {
    "duckdb": duckdb_plain(),
    "pyarrow": pyarrow_dataset(),
    "polars": polars_scan(),
}
if "--dedupe" in sys.argv:
    out["duckdb_deduped"] = duckdb_deduped()
print(json.dumps(out))

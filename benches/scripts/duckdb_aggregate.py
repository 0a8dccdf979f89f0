"""The raw-table aggregate of `report_timing` (monthly sum of delta per account and category
over a year) with DuckDB on the same Parquet files, for a side-by-side time.

    /work/main/.venv/bin/python benches/scripts/duckdb_aggregate.py \
        --files <the list report_timing printed> [--shape day|int|tz] [--from 2025-11-01] [--to 2026-11-01] [--runs 10]

`--files` is the list `report_timing` writes (one path a line; it prints where). Periods are Beijing time, as in
jieneng: the year's bounds are the local midnights, 16:00 UTC the day before.
"""

import argparse
import datetime as dt
import statistics
import time

import duckdb


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", required=True)
    p.add_argument("--from", dest="start", default="2025-11-01")
    p.add_argument("--to", dest="end", default="2026-11-01")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument(
        "--shape",
        choices=["int", "tz", "day"],
        default="day",
        help="how a row's Beijing month is found, as report_timing --shape: day (sums per "
        "local day from the milliseconds, then months), int (each row's month from the "
        "milliseconds) or tz (interval arithmetic on the TIMESTAMPTZ); the same result",
    )
    a = p.parse_args()
    files = [f for f in open(a.files, encoding="utf-8").read().splitlines() if f]
    utc = dt.timezone.utc

    def bound(day: str) -> str:
        d = dt.datetime.fromisoformat(day).replace(tzinfo=utc) - dt.timedelta(hours=8)
        return d.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    where = (
        f"delta IS NOT NULL AND ts > TIMESTAMPTZ '{bound(a.start)}' "
        f"AND ts <= TIMESTAMPTZ '{bound(a.end)}'"
    )
    if a.shape == "day":
        sql = (
            "SELECT account, category, date_trunc('month', epoch_ms(day * 86400000)) AS month, "
            "sum(consumption) AS consumption, sum(n) AS n "
            "FROM (SELECT account, category, (epoch_ms(ts) + 28799999) // 86400000 AS day, "
            "sum(delta) AS consumption, count(*) AS n "
            f"FROM read_parquet({files!r}) WHERE {where} GROUP BY 1, 2, 3) "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    else:
        local = {
            "int": "epoch_ms(epoch_ms(ts) + 28799999)",
            "tz": "ts + INTERVAL 8 HOUR - INTERVAL 1 MILLISECOND",
        }[a.shape]
        sql = (
            "SELECT account, category, "
            f"date_trunc('month', {local}) AS month, "
            "sum(delta) AS consumption, count(*) AS n "
            f"FROM read_parquet({files!r}) WHERE {where} "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"DuckDB {duckdb.__version__}, {threads} threads, {len(files)} files")
    times = []
    for i in range(a.runs):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        ms = (time.perf_counter() - t) * 1e3
        total = sum(r[3] for r in rows if r[3] is not None)
        print(f"  DuckDB run {i}: {ms:.1f} ms ({len(rows)} groups, total {total:.2f})")
        times.append(ms)
    print(
        f"raw aggregate with DuckDB: min {min(times):.1f} ms, "
        f"median {statistics.median(times):.1f} ms over {len(times)} runs"
    )


if __name__ == "__main__":
    main()

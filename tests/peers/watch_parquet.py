#!/usr/bin/env python3
"""A reader that keeps opening every visible Parquet file of a jieneng data directory while the
server is being killed and restarted, as an outside tool would (pyarrow, files as they are).

A file may vanish between listing and opening (compaction removes what it replaced): that is
counted, not an error. Any other failure to read a visible file fully is an error: a reader
must never see a partial or corrupt file.

Runs until STOP_FILE exists, then prints JSON {"reads", "rows", "vanished", "errors"}.

Usage: watch_parquet.py DATA_DIR STOP_FILE
"""

import glob
import json
import os
import sys
import time

import pyarrow.parquet as pq

data_dir, stop_file = sys.argv[1], sys.argv[2]
reads = rows = vanished = 0
errors = []
while not os.path.exists(stop_file):
    files = glob.glob(f"{data_dir}/readings/*/*.parquet") + glob.glob(
        f"{data_dir}/rollups/*/*/*.parquet"
    )
    for path in files:
        try:
            with open(path, "rb") as f:
                table = pq.read_table(f)
            reads += 1
            rows += table.num_rows
        except FileNotFoundError:
            vanished += 1
        except Exception as e:  # noqa: BLE001 - any other failure is what we look for
            if os.path.exists(path):
                errors.append(f"{path}: {type(e).__name__}: {e}")
            else:
                vanished += 1
    time.sleep(0.01)
print(json.dumps({"reads": reads, "rows": rows, "vanished": vanished, "errors": errors[:20]}))

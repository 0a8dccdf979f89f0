#!/usr/bin/env python3
"""A third-party client of jieneng's batch API: builds wire-v1 Arrow IPC streams with pyarrow
(dictionary strings, ZSTD buffer compression) and POSTs them with the standard library, then
sends the bodies a server must refuse. Prints one JSON object: the rows it got acknowledged
and, per case, the HTTP status and the parsed JSON answer.

Usage: post_arrow.py BASE_URL TOKEN MAX_BODY_BYTES
"""

import gzip
import json
import sys
import urllib.error
import urllib.request

import pyarrow as pa

base, token, max_body = sys.argv[1], sys.argv[2], int(sys.argv[3])
ARROW = "application/vnd.apache.arrow.stream"
T0 = 1764547200000  # 2025-12-01T00:00:00Z


def post(body, token=token, ctype=ARROW, encoding=None):
    req = urllib.request.Request(f"{base}/api/v1/batches", data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if encoding:
        req.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return {"status": r.status, "body": json.loads(r.read())}
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"not_json": text.decode("utf-8", "replace")}
        return {"status": e.code, "body": answer}


def rows(meter, n, start=0, account="110108A001"):
    """n readings of an electricity meter every 15 minutes, as plain Python values."""
    out = []
    for i in range(start, start + n):
        out.append(
            {
                "ts": T0 + i * 900_000,
                "account": account,
                "meter": meter,
                "category": "01",
                "item": "01A10",
                "quantity": "energy_import",
                "unit": "kWh",
                "value": 1000.0 + i * 0.25,
                "delta": None if i == 0 else 0.25,
                "kgce": None if i == 0 else 0.25 * 0.1229,
                "kgco2e": None if i == 0 else 0.25 * 0.5366,
                "factor": None if i == 0 else "mee-nbs-2023/grid/华北",
                "quality": None if i % 4 else "estimated",
            }
        )
    return out


def stream(gateway, seq, readings, compression="zstd", version="1"):
    dict_str = pa.dictionary(pa.int32(), pa.string())
    schema = pa.schema(
        [
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("account", dict_str),
            ("meter", pa.string()),
            ("category", dict_str),
            ("item", dict_str),
            ("quantity", dict_str),
            ("unit", dict_str),
            ("value", pa.float64()),
            ("delta", pa.float64()),
            ("kgce", pa.float64()),
            ("kgco2e", pa.float64()),
            ("factor", pa.string()),
            ("quality", dict_str),
        ],
        metadata={"jieneng.gateway": gateway, "jieneng.seq": str(seq), "jieneng.version": version},
    )
    table = pa.Table.from_pylist(readings, schema=schema)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, schema, options=options) as w:
        # Two record batches, so row numbers must count across them.
        for b in table.to_batches(max_chunksize=max(1, (len(readings) + 1) // 2)):
            w.write_batch(b)
    return sink.getvalue().to_pybytes()


cases = {}
sent = []

first = rows("lighting", 40)
cases["stored"] = post(stream("gw-py", 1, first))
sent += first
cases["retry"] = post(stream("gw-py", 1, first))
# The same content coded with gzip around an uncompressed stream.
second = rows("hvac", 24, account="110108D002")
cases["gzip"] = post(gzip.compress(stream("gw-py", 2, second, compression=None)), encoding="gzip")
sent += second

bad = rows("refused-invalid", 20)
bad[17]["account"] = "11010A001"
cases["invalid"] = post(stream("gw-py", 3, bad))
cases["malformed"] = post(b"\xff\xff\xff\xff\x10\x00\x00\x00 certainly not arrow")
cases["truncated"] = post(stream("gw-py", 3, rows("refused-cut", 10))[:-8])
cases["wrong_token"] = post(stream("gw-py", 3, rows("refused-token", 5)), token="not-a-token")
cases["no_token"] = post(stream("gw-py", 3, rows("refused-token", 5)), token=None)
cases["wrong_gateway"] = post(stream("gw-other", 3, rows("refused-gateway", 5)))
cases["unsupported_type"] = post(stream("gw-py", 3, rows("refused-type", 5)), ctype="text/csv")
# Oversize: a valid stream padded beyond the body limit (uncompressed, distinct values).
big = rows("refused-big", 4)
big[0]["factor"] = "x" * (max_body + 1024)
cases["oversize"] = post(stream("gw-py", 3, big, compression=None))
# Zip bombs: a few KiB that decompress far past 8 x max_body.
bomb = b"\0" * (8 * max_body + 4096)
cases["gzip_bomb"] = post(gzip.compress(bomb, 9), encoding="gzip")
cases["zstd_bomb"] = post(pa.compress(bomb, codec="zstd", asbytes=True), encoding="zstd")
cases["zstd_bomb_size"] = len(pa.compress(bomb, codec="zstd", asbytes=True))

with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
    metrics = r.read().decode()

print(json.dumps({"sent": sent, "cases": cases, "metrics": metrics}))

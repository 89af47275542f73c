#!/usr/bin/env python3
"""How fast the BigQuery fake (test/t/bigquery_fake.py) takes traffic, alone:
the ceiling of any pgsink figure measured against it.

    test/bench/bigquery_fake_bench.py [--rows 200000] [--batch 500]
        [--connections 1,4] [--load-rows 100000] [--chunk 20000]

1. insertAll: ROWS rows of a pgsink-like raw table (id, account, note,
   amount NUMERIC, created TIMESTAMP and the six _pgsink_ columns) in
   BATCH-row requests over keep-alive connections, for each CONNECTIONS
   value, with check_values true (every field checked and typed) and false
   (the request's shape only); rows/s and requests/s.
2. Load jobs: LOAD_ROWS rows in CHUNK-row Avro files (deflate, logical
   types), multipart uploads polled to DONE, with load_check "full" (every
   value decoded with python3-avro and checked) and "schema" (framing and
   schema checked, rows counted).
Python 3 with Debian's python3-cryptography and python3-avro; the fake
runs on a free port and is stopped at the end.
"""
import argparse
import base64
import datetime
import decimal
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import avro.datafile
import avro.io
import avro.schema
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "..", "t", "bigquery_fake.py")
PROJECT, DATASET, TABLE = "bench-project", "bench", "public_bench_rows_raw"
EMAIL = "bench@bench-project.iam.gserviceaccount.com"

FIELDS = [
    {"name": "id", "type": "INT64"}, {"name": "account", "type": "INT64"},
    {"name": "note", "type": "STRING"}, {"name": "amount", "type": "NUMERIC"},
    {"name": "created", "type": "TIMESTAMP"},
    {"name": "_pgsink_lsn", "type": "INT64", "mode": "REQUIRED"},
    {"name": "_pgsink_sequence", "type": "INT64", "mode": "REQUIRED"},
    {"name": "_pgsink_op", "type": "STRING", "mode": "REQUIRED"},
    {"name": "_pgsink_timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "_pgsink_xid", "type": "INT64"},
    {"name": "_pgsink_unchanged", "type": "STRING", "mode": "REPEATED"}]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Client:
    def __init__(self, port, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.token = token

    def call(self, method, path, body=None, headers=None, raw=None):
        h = {"Authorization": "Bearer " + self.token}
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=h)
        r = self.conn.getresponse()
        out = r.read()
        return r.status, (json.loads(out) if out else None)


def control(port, what, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST" if body is not None else "GET", "/_fake/" + what,
              body=json.dumps(body).encode() if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return json.loads(r.read())


def row(i):
    return {"id": str(i), "account": str(i % 1000), "note": "note number %d" % i,
            "amount": "%d.%02d" % (i % 100000, i % 100),
            "created": "2026-11-30 12:00:00.%06d+00:00" % (i % 1000000),
            "_pgsink_lsn": str(0x1000000 + i // 1000), "_pgsink_sequence": str(i % 1000 + 1),
            "_pgsink_op": "insert", "_pgsink_timestamp": "2026-11-30T12:00:00.123456Z",
            "_pgsink_xid": str(700 + i // 1000), "_pgsink_unchanged": []}


def stream(port, token, rows, batch, connections):
    base = f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables/{TABLE}/insertAll"
    bodies = []
    for start in range(0, rows, batch):
        bodies.append(json.dumps({"rows": [
            {"insertId": "%X/%d" % (0x1000000 + i // 1000, i % 1000 + 1), "json": row(i)}
            for i in range(start, min(rows, start + batch))]}).encode())
    lock = threading.Lock()
    todo = list(range(len(bodies)))
    failures = []

    def worker():
        c = Client(port, token)
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            st, out = c.call("POST", base, raw=bodies[n],
                             headers={"Content-Type": "application/json"})
            if st != 200 or out.get("insertErrors"):
                failures.append((st, str(out)[:300]))
    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    if failures:
        sys.exit(f"insertAll failed: {failures[:3]}")
    return took, len(bodies), sum(len(b) for b in bodies)


def avro_chunk(start, n):
    schema = {"type": "record", "name": "row", "fields": [
        {"name": "id", "type": ["null", "long"]}, {"name": "account", "type": ["null", "long"]},
        {"name": "note", "type": ["null", "string"]},
        {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal",
                                             "precision": 38, "scale": 9}]},
        {"name": "created", "type": ["null", {"type": "long",
                                              "logicalType": "timestamp-micros"}]},
        {"name": "_pgsink_lsn", "type": "long"}, {"name": "_pgsink_sequence", "type": "long"},
        {"name": "_pgsink_op", "type": "string"},
        {"name": "_pgsink_timestamp", "type": {"type": "long",
                                               "logicalType": "timestamp-micros"}},
        {"name": "_pgsink_xid", "type": ["null", "long"]},
        {"name": "_pgsink_unchanged", "type": {"type": "array", "items": "string"}}]}
    buf = io.BytesIO()
    w = avro.datafile.DataFileWriter(buf, avro.io.DatumWriter(),
                                     avro.schema.parse(json.dumps(schema)), codec="deflate")
    ts = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.timezone.utc)
    for i in range(start, start + n):
        w.append({"id": i, "account": i % 1000, "note": "note number %d" % i,
                  "amount": decimal.Decimal("%d.%02d" % (i % 100000, i % 100)).quantize(
                      decimal.Decimal("0.000000001")),
                  "created": ts, "_pgsink_lsn": 0x2000000, "_pgsink_sequence": i,
                  "_pgsink_op": "import", "_pgsink_timestamp": ts, "_pgsink_xid": None,
                  "_pgsink_unchanged": []})
    w.flush()
    data = buf.getvalue()
    w.close()
    return data


def load(port, token, data_chunks, tag):
    c = Client(port, token)
    t0 = time.time()
    rows = 0
    for n, (count, data) in enumerate(data_chunks):
        job = {"jobReference": {"projectId": PROJECT, "jobId": f"bench_{tag}_{n}"},
               "configuration": {"load": {
                   "destinationTable": {"projectId": PROJECT, "datasetId": DATASET,
                                        "tableId": TABLE},
                   "sourceFormat": "AVRO", "useAvroLogicalTypes": True}}}
        b = "bench_boundary"
        body = (f"--{b}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(job)}\r\n--{b}\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + data + f"\r\n--{b}--\r\n".encode()
        st, out = c.call("POST", f"/upload/bigquery/v2/projects/{PROJECT}/jobs?"
                                 "uploadType=multipart", raw=body,
                         headers={"Content-Type": f"multipart/related; boundary={b}"})
        if st != 200:
            sys.exit(f"load insert failed: {st} {out}")
        while True:
            st, out = c.call("GET", f"/bigquery/v2/projects/{PROJECT}/jobs/bench_{tag}_{n}")
            if out["status"]["state"] == "DONE":
                break
            time.sleep(0.01)
        if out["status"].get("errorResult"):
            sys.exit(f"load failed: {out['status']}")
        rows += int(out["statistics"]["load"]["outputRows"])
    return time.time() - t0, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--connections", default="1,4")
    ap.add_argument("--load-rows", type=int, default=100000)
    ap.add_argument("--chunk", type=int, default=20000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bqfake_bench.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = os.path.join(tmp, "pub.pem")
    with open(pub, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    port = free_port()
    token_uri = f"http://127.0.0.1:{port}/token"
    fake = subprocess.Popen([sys.executable, FAKE, "--port", str(port), "--project", PROJECT,
                             "--account", f"{EMAIL}={pub}", "--token-uri", token_uri,
                             "--config", json.dumps({"record_ids": False, "job_seconds": 0})])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        now = int(time.time())
        signing = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64url(
            json.dumps({"iss": EMAIL, "aud": token_uri, "iat": now, "exp": now + 3600,
                        "scope": "https://www.googleapis.com/auth/bigquery"}).encode())
        jwt = signing + "." + b64url(key.sign(signing.encode(), padding.PKCS1v15(),
                                              hashes.SHA256()))
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("POST", "/token", body=("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type"
                                          "%3Ajwt-bearer&assertion=" + jwt).encode(),
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        token = json.loads(c.getresponse().read())["access_token"]
        api = Client(port, token)
        api.call("POST", f"/bigquery/v2/projects/{PROJECT}/datasets",
                 {"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}})
        st, out = api.call("POST", f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables",
                           {"tableReference": {"projectId": PROJECT, "datasetId": DATASET,
                                               "tableId": TABLE},
                            "schema": {"fields": FIELDS},
                            "timePartitioning": {"type": "DAY", "field": "_pgsink_timestamp"}})
        assert st == 200, out
        print(f"insertAll: {a.rows} rows in {a.batch}-row requests")
        for check in (True, False):
            for conns in [int(x) for x in a.connections.split(",")]:
                control(port, "config", {"dedup": False, "check_values": check})
                took, requests, nbytes = stream(port, token, a.rows, a.batch, conns)
                print(f"  check_values {str(check).lower()}, {conns} connection(s): "
                      f"{a.rows / took:,.0f} rows/s, {requests / took:,.1f} requests/s, "
                      f"{nbytes / took / 1e6:.1f} MB/s ({took:.1f} s)")
        stored = control(port, "stats")["rows_stored"]
        print(f"  rows stored: {stored}")
        t0 = time.time()
        chunks = [(min(a.chunk, a.load_rows - s), avro_chunk(s, min(a.chunk, a.load_rows - s)))
                  for s in range(0, a.load_rows, a.chunk)]
        print(f"load jobs: {a.load_rows} rows in {len(chunks)} Avro files of {a.chunk} rows, "
              f"{sum(len(d) for _, d in chunks) / 1e6:.1f} MB (written in "
              f"{time.time() - t0:.1f} s)")
        for mode in ("full", "schema"):
            control(port, "config", {"load_check": mode})
            took, rows = load(port, token, chunks, mode)
            print(f"  load_check {mode}: {rows / took:,.0f} rows/s ({took:.1f} s, {rows} rows)")
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()

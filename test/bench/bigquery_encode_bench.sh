#!/usr/bin/env bash
# bigquery_encode_bench.sh: the BigQuery sink's own work on one batch, with no
# server: ROWS insert entries of a 10-column table (bigint, text, numeric,
# double, boolean, timestamptz, jsonb, int[], uuid, a 200-byte text) parsed,
# made rows and insertAll bodies, the HTTP answers scripted (bigquery_
# encode_bench.cpp). Prints the CPU time of one exchange (the first, which
# makes the tables, left out): min and median of ROUNDS. CPU time, not wall
# time, so that other work on the machine moves it little.
#
# Usage: test/bench/bigquery_encode_bench.sh [source tree, default this one]
#        (PG_CONFIG for the server headers; libavro, libcurl, libcrypto)
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "${1:-$HERE/../..}" && pwd) # the sink's sources (an older tree: before/after)
ROWS=${ROWS:-20000}
ROUNDS=${ROUNDS:-15}
PG_CONFIG=${PG_CONFIG:-pg_config}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/key.pem" 2>/dev/null
python3 - "$W" "$ROWS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
json.dump({"type": "service_account", "project_id": "p", "private_key_id": "k1",
           "private_key": open(d + "/key.pem").read(),
           "client_email": "a@p.iam.gserviceaccount.com", "token_uri": "http://127.0.0.1:1/token"},
          open(d + "/key.json", "w"))
fields = [("id", "long", "bigint"), ("v", "string", "text"), ("n", "string", "numeric(12,2)"),
          ("f", "double", "double precision"), ("b", "boolean", "boolean"),
          ("ts", "string", "timestamp with time zone"), ("j", "string", "jsonb"),
          ("arr", "string", "integer[]"), ("u", "string", "uuid"), ("big", "string", "text")]
lines = [json.dumps({"timestamp": "2024-01-01T00:00:00.000000+00:00", "lsn": "0/1000",
                     "schema": {"namespace": "public.t", "type": "record", "name": "value",
                                "fields": [{"name": a, "type": [t, "null"], "default": None,
                                            "pg_type": p} for a, t, p in fields],
                                "key": ["id"]}}, separators=(",", ":"))]
for i in range(n):
    after = {"id": str(i), "v": "value number %d with some text" % i, "n": "%d.25" % i,
             "f": i * 0.5, "b": i % 2 == 0, "ts": "2024-02-29T12:34:56.123456+00:00",
             "j": {"a": i, "b": [1, 2, "x"]}, "arr": [i, -i, 3],
             "u": "6f1e0b1c-2a3b-4c5d-8e9f-%012d" % i, "big": "x" * 200}
    lines.append(json.dumps({"timestamp": "2024-01-01T00:00:01.000000+00:00", "sequence": i + 1,
                             "namespace": "public", "name": "t", "op": "insert", "lsn": "0/2000",
                             "xid": 771, "before": None, "after": after}, separators=(",", ":")))
open(d + "/batch.jsonl", "w").write("\n".join(lines) + "\n")
PY
S=$SRC/src
g++ -std=c++17 -O2 -I"$S" -I"$($PG_CONFIG --includedir-server)" -o "$W/bench" \
    "$HERE/bigquery_encode_bench.cpp" "$S/sinks/bigquery_sink.cpp" \
    "$S/sinks/bigquery_schema.cpp" "$S/sinks/bigquery_load.cpp" "$S/sinks/bigquery_auth.cpp" \
    "$S/sinks/http_sink.cpp" "$S/core/digest.cpp" "$S/changelog/raw_json.cpp" \
    "$S/changelog/avro_schema.cpp" "$S/changelog/entry_head.cpp" "$S/changelog/json_writer.cpp" \
    "$S/http/http_pipeline.cpp" -lavro -lcurl -lcrypto -lz
"$W/bench" "$W" "$ROWS" "$ROUNDS"

#!/usr/bin/env bash
# bigquery_bench.sh: the BigQuery sink against the strict local BigQuery
# (test/t/bigquery_fake.py, keeping counts only: store_rows false, and
# load_check "schema": Avro framing and schema checked, rows counted, since
# python3-avro decodes some 10^4 rows/s), in one
# run, on one cluster:
#   1. streaming: a backlog of ROWS rows (default 1M, 1000-row transactions)
#      in the spool (kept: pgsink.spool_retention = 1d); the file sink and
#      the BigQuery sink are each rewound to the spool's start
#      (pgsink.rewind_sink) and timed back to its end: rows/s, and the
#      insertAll requests/s the fake served;
#   2. imports: a table of IMPORT_ROWS rows (default 2M) imported
#      (add_table) with the file sink alone, timed until delivered; then the
#      BigQuery sink is added and delivers the same import entries from the
#      spool through Avro load jobs, timed; and the file sink's delivery of
#      them (rewound) for comparison. Target: BigQuery >= 0.7x the file sink.
#
# Usage: PGBIN=... BENCH_DIR=/tmp/bench_bq test/bench/bigquery_bench.sh
#        (as a user that may run initdb, not root; BENCH_PORT, BQ_PORT to avoid clashes)
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
IMPORT_ROWS=${IMPORT_ROWS:-2000000}
BQ_PORT=${BQ_PORT:-5497}
BQ_DIR="$BENCH_DIR/bigquery"
BQ="http://127.0.0.1:$BQ_PORT"
PYTHON=${PYTHON:-/usr/bin/python3}

# A service account of our own: its key pair, and its key file.
rm -rf "$BQ_DIR" && mkdir -p "$BQ_DIR"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$BQ_DIR/key.pem" 2>/dev/null
openssl pkey -in "$BQ_DIR/key.pem" -pubout -out "$BQ_DIR/pub.pem"
"$PYTHON" - "$BQ_DIR" "$BQ" <<'PY'
import json, os, sys
d, url = sys.argv[1], sys.argv[2]
key = {"type": "service_account", "project_id": "bench", "private_key_id": "k1",
       "private_key": open(d + "/key.pem").read(), "client_email": "bench@bench.iam.gserviceaccount.com",
       "token_uri": url + "/token"}
with open(d + "/key.json", "w") as f:
    json.dump(key, f)
os.chmod(d + "/key.json", 0o600)
PY
"$PYTHON" test/t/bigquery_fake.py --port "$BQ_PORT" --project bench \
    --account "bench@bench.iam.gserviceaccount.com=$BQ_DIR/pub.pem=k1" --token-uri "$BQ/token" \
    --config '{"store_rows": false, "record_ids": false, "dedup": false, "job_seconds": 0.1, "load_check": "schema"}' \
    --log "$BQ_DIR/fake.log" > "$BQ_DIR/fake.out" 2>&1 &
bq_pid=$!
until curl -sf "$BQ/_fake/config" >/dev/null; do sleep 0.1; done

BENCH_EXTRA_CONF="pgsink.sink = 'file, bigquery'
pgsink.bigquery_credentials = '$BQ_DIR/key.json'
pgsink.bigquery_endpoint = '$BQ'
pgsink.bigquery_dataset = 'bench'
pgsink.spool_retention = '1d'
${BENCH_EXTRA_CONF:-}"
bench_cluster_start
trap 'bench_cluster_stop; kill "$bq_pid" 2>/dev/null' EXIT

rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }
spool_end() { psqlq -c "SELECT durable_offset FROM pgsink.spool"; }
# Sink $1 rewound and timed until it is back at the spool's end.
time_sink() { bench_time_sink "$1" "$(spool_end)"; }
fake_count() { curl -sf "$BQ/_fake/stats" | "$PYTHON" -c "import json, sys; s = json.load(sys.stdin); print(sum(s['requests'].get('$1', {}).values()))"; }

echo "== streaming: a backlog of $ROWS rows in $TXN_ROWS-row transactions, from the spool"
psqlq <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                         amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
SQL
psqlq -c "SELECT pgsink.add_table('bench_rows', false)" >/dev/null
psqlq -c "SELECT pgsink.wait_for_delivery()" >/dev/null
pgsink_pause
bench_load_rows "$ROWS" "$TXN_ROWS"
pgsink_resume
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
file_ms=$(time_sink file)
printf '%-36s %8s ms %10s rows/s\n' "file sink (fsynced)" "$file_ms" "$(rate "$ROWS" "$file_ms")"
r0=$(fake_count insertAll)
bq_ms=$(time_sink bigquery)
r1=$(fake_count insertAll)
printf '%-36s %8s ms %10s rows/s %8s insertAll/s (%s requests)\n' "bigquery sink (insertAll)" "$bq_ms" \
    "$(rate "$ROWS" "$bq_ms")" "$(rate $((r1 - r0)) "$bq_ms")" "$((r1 - r0))"

echo "== imports: $IMPORT_ROWS rows"
psqlq <<SQL
CREATE TABLE bench_import (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                           amount numeric(12,2), created timestamptz NOT NULL);
INSERT INTO bench_import (account, note, amount, created)
SELECT g % 1000, 'note number ' || g, (g % 100000) * 1.25,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
  FROM generate_series(1, $IMPORT_ROWS) g;
VACUUM (ANALYZE, FREEZE) bench_import;
CHECKPOINT;
SQL
# The file sink alone imports the table: BigQuery's sink waits (pgsink.sink).
psqlq -c "ALTER SYSTEM SET pgsink.sink = 'file'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
t0=$(now_ms)
psqlq -c "SELECT pgsink.add_table('bench_import')" >/dev/null
until [ "$(psqlq -c "SELECT bool_and(state = 'complete') FROM pgsink.imports WHERE \"table\" = 'bench_import'::regclass")" = t ]; do
    sleep 0.1
done
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
import_ms=$(( $(now_ms) - t0 ))
end=$(spool_end)
printf '%-36s %8s ms %10s rows/s\n' "file sink: the import (add_table)" "$import_ms" "$(rate "$IMPORT_ROWS" "$import_ms")"
j0=$(fake_count jobs.insert)
psqlq -c "ALTER SYSTEM SET pgsink.sink = 'file, bigquery'" -c "SELECT pg_reload_conf()" >/dev/null
t0=$(now_ms)
# Its cursor is where it stopped: it delivers the import entries (and nothing else).
bench_wait_cursor bigquery "$end"
bq_import_ms=$(( $(now_ms) - t0 ))
j1=$(fake_count jobs.insert)
loaded=$(curl -sf "$BQ/_fake/jobs" | "$PYTHON" -c "import json, sys; print(sum(j.get('outputRows') or 0 for j in json.load(sys.stdin) if j.get('state') == 'DONE' and not j.get('errorResult')))")
printf '%-36s %8s ms %10s rows/s (%s load jobs, %s rows loaded)\n' "bigquery sink: the import's entries" \
    "$bq_import_ms" "$(rate "$IMPORT_ROWS" "$bq_import_ms")" "$((j1 - j0))" "$loaded"
file_replay_ms=$(time_sink file)
printf '%-36s %8s ms %10s rows/s (everything in the spool)\n' "file sink: the spool again" "$file_replay_ms" \
    "$(rate $((ROWS + IMPORT_ROWS)) "$file_replay_ms")"
awk -v b="$bq_import_ms" -v f="$import_ms" 'BEGIN {
    printf "bigquery import / file sink import: %.2fx (target >= 0.7x)\n", f / b }'

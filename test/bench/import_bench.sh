#!/usr/bin/env bash
# import_bench.sh: import (backfill) throughput against a server-side COPY of
# the same rows as JSON, and stream latency while the import runs, in one run
# on one cluster.
#
#   1. A table of IMPORT_ROWS rows (default 5M): id bigserial primary key,
#      account int, note text, amount numeric(12,2), created timestamptz.
#   2. COPY (SELECT row_to_json(t) FROM bench_import t) TO '<file>' (server
#      side, so no client in the way), timed; then the same plus an fsync of
#      the file, since pgsink's file is fsynced.
#   3. pgsink's import of the table: add_table(), until the job is complete
#      and wait_for_delivery() returns (everything fsynced and confirmed).
#   4. Meanwhile, a pgbench at STREAM_RATE rows/s (default 200) inserts into
#      another captured table; the commit-to-file latency of those rows
#      (arrival in the file minus the entry's commit timestamp) is measured
#      by following the file, p50/p99/max.
# Prints rows/s of both and the ratio (target >= 0.8x).
#
# Usage: BENCH_DIR=/tmp/bench_imp test/bench/import_bench.sh
#        (as a user that may run initdb, not root; BENCH_PORT to avoid a clash)
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
IMPORT_ROWS=${IMPORT_ROWS:-5000000}
STREAM_RATE=${STREAM_RATE:-200}
IMPORT_TIMEOUT=${IMPORT_TIMEOUT:-3600}

bench_cluster_start
trap bench_cluster_stop EXIT

echo "== setup: $IMPORT_ROWS rows"
t0=$(now_ms)
psqlq <<SQL
CREATE TABLE bench_import (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                           amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
INSERT INTO bench_import (account, note, amount, created)
SELECT g % 1000, 'note number ' || g, (g % 100000) * 1.25,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
  FROM generate_series(1, $IMPORT_ROWS) g;
VACUUM (ANALYZE, FREEZE) bench_import;
CREATE TABLE bench_latency (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
                            note text);
CHECKPOINT;
SQL
psqlq -c "SELECT pgsink.add_table('bench_latency', import => false)" >/dev/null
psqlq -c "SELECT pgsink.wait_for_delivery()" >/dev/null
echo "load: $(( $(now_ms) - t0 )) ms; table size $(psqlq -c "SELECT pg_size_pretty(pg_table_size('bench_import'))")"

rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }

echo "== COPY (SELECT row_to_json(t) FROM bench_import t) TO file"
copy_file="$BENCH_DIR/copy.jsonl"
rm -f "$copy_file"
# A first pass warms the caches for both contestants (the table is read twice in all).
psqlq -c "SELECT count(*) FROM bench_import" >/dev/null
t0=$(now_ms)
copied=$(psql -X -v ON_ERROR_STOP=1 -c "COPY (SELECT row_to_json(t) FROM bench_import t) TO '$copy_file'" | awk '/^COPY/ { print $2 }')
copy_ms=$(( $(now_ms) - t0 ))
t1=$(now_ms)
python3 -c "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)" "$copy_file"
copy_sync_ms=$(( copy_ms + $(now_ms) - t1 ))
[ "$copied" = "$IMPORT_ROWS" ] || { echo "COPY wrote $copied of $IMPORT_ROWS rows" >&2; exit 1; }
copy_bytes=$(stat -c %s "$copy_file")
rm -f "$copy_file"

echo "== pgsink import, with a stream of $STREAM_RATE rows/s into another captured table"
sink="$BENCH_DIR/pgsink.jsonl"
# Follow the sink file: commit-to-file latency of the bench_latency rows only
# (import entries are skipped: their timestamp is the time their chunk was read).
cat > "$BENCH_DIR/follow.py" <<'PY'
import datetime, os, sys, time
path, stop_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
marker = b'"name":"bench_latency","op":"insert"'
lat = []
with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    pending = b""
    while True:
        chunk = f.read(8 << 20)
        if not chunk:
            if os.path.exists(stop_file):
                break
            time.sleep(0.0005)
            continue
        arrived = time.time()
        data = pending + chunk
        end = data.rfind(b"\n") + 1
        pending = data[end:]
        i = data.find(marker, 0, end)
        while i >= 0:
            start = data.rfind(b"\n", 0, i) + 1
            ts = data[start + 14:start + 46].decode()   # {"timestamp":"....+00:00"
            lat.append((arrived - datetime.datetime.fromisoformat(ts).timestamp()) * 1000.0)
            i = data.find(marker, i + 1, end)
lat.sort()
with open(out, "w") as o:
    if not lat:
        o.write("latency: no bench_latency rows arrived\n")
    else:
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        o.write(f"stream latency during the import over {len(lat)} rows: p50 {pick(0.50):.1f} ms, "
                f"p99 {pick(0.99):.1f} ms, max {lat[-1]:.1f} ms\n")
PY
stop_file="$BENCH_DIR/follow.stop"
rm -f "$stop_file"
python3 "$BENCH_DIR/follow.py" "$sink" "$stop_file" "$BENCH_DIR/latency.txt" &
follow_pid=$!
echo "INSERT INTO bench_latency (note) VALUES ('latency probe');" > "$BENCH_DIR/latency.sql"
pgbench -n -f "$BENCH_DIR/latency.sql" -R "$STREAM_RATE" -T "$IMPORT_TIMEOUT" -c 1 -j 1 bench \
    > "$BENCH_DIR/latency_pgbench.txt" 2>&1 &
pgbench_pid=$!
sleep 1

log_lines=$(wc -l < "$BENCH_DIR/server.log")
t0=$(now_ms)
psqlq -c "SELECT pgsink.add_table('bench_import')" >/dev/null
# Completion is read from the server log, not by polling pgsink.imports.
state=""
while :; do
    state=$(tail -n +"$((log_lines + 1))" "$BENCH_DIR/server.log" |
                grep -oE "import job [0-9]+ (complete|expired)" | awk '{ print $4 }' | tail -1 || true)
    [ -n "$state" ] && break
    [ $(( $(now_ms) - t0 )) -gt $(( IMPORT_TIMEOUT * 1000 )) ] && break
    sleep 0.2
done
psqlq -c "SELECT pgsink.wait_for_delivery('10 min')" >/dev/null
import_ms=$(( $(now_ms) - t0 ))
kill "$pgbench_pid" 2>/dev/null || true
wait "$pgbench_pid" 2>/dev/null || true
psqlq -c "SELECT pgsink.wait_for_delivery('1 min')" >/dev/null
touch "$stop_file"
wait "$follow_pid"

job=$(psqlq -c "SELECT state, rows_imported, chunks, chunk_rows, finished_at - started_at FROM pgsink.imports WHERE \"table\" = 'bench_import'::regclass ORDER BY id DESC LIMIT 1")
imported=$(( $(grep -c '"name":"bench_import","op":"import"' "$sink") ))
sink_bytes=$(stat -c %s "$sink")
echo "job (state|rows_imported|chunks|last chunk_rows|finished_at - started_at): $job"
[ "$state" = complete ] || { echo "the import did not complete (state: $state)" >&2; exit 1; }
[ "$imported" -ge "$IMPORT_ROWS" ] || { echo "the file holds $imported import entries, not $IMPORT_ROWS" >&2; exit 1; }

copy_rate=$(rate "$copied" "$copy_ms")
copy_sync_rate=$(rate "$copied" "$copy_sync_ms")
import_rate=$(rate "$imported" "$import_ms")
printf '%-46s %9s rows %8s ms %9s rows/s %6s MB\n' "COPY (row_to_json) TO file" "$copied" "$copy_ms" "$copy_rate" "$((copy_bytes >> 20))"
printf '%-46s %9s rows %8s ms %9s rows/s\n' "COPY (row_to_json) TO file + fsync" "$copied" "$copy_sync_ms" "$copy_sync_rate"
printf '%-46s %9s rows %8s ms %9s rows/s %6s MB\n' "pgsink import -> file (fsynced, confirmed)" "$imported" "$import_ms" "$import_rate" "$((sink_bytes >> 20))"
awk -v a="$import_rate" -v b="$copy_rate" -v c="$copy_sync_rate" \
    'BEGIN { printf "ratio import / COPY:         %.2fx (target >= 0.8x)\nratio import / COPY + fsync: %.2fx\n", a/b, a/c }'
cat "$BENCH_DIR/latency.txt"

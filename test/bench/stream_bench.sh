#!/usr/bin/env bash
# stream_bench.sh: change capture throughput, latency and overhead, in one run
# on one cluster, so the ratios compare like with like.
#
#   1. Throughput: ROWS rows (default 1M) in 1000-row transactions are written
#      while every consumer is behind; then each consumer reads the same WAL:
#        pgsink (stream worker -> file sink, fsynced)
#        pg_recvlogical + wal2json (format-version 2) -> file
#        raw in-server decoding: pg_logical_slot_get_binary_changes(pgoutput), counting rows
#        the floor of in-server decoding: pg_logical_slot_get_changes on a slot of
#          test/bench/floor's pgsink_floor (decodes and deforms, outputs nothing);
#          skipped unless built (make -C test/bench/floor) or FLOOR_DIR names its build
#      and, when pgsink has a spool directory, its size after the load.
#   2. Commit-to-file latency p50/p99 at a steady RATE rows/s (default 2000).
#   3. pgbench TPS with and without capture.
#
# Usage: test/bench/stream_bench.sh   (as a user that may run initdb; not root)
# Environment: ROWS, TXN_ROWS, RATE, LATENCY_SECONDS, PGBENCH_SECONDS,
#   POLL_INTERVAL, SKIP_THROUGHPUT, SKIP_LATENCY, SKIP_PGBENCH, SKIP_WAL2JSON, BENCH_DIR,
#   BENCH_PORT, BENCH_EXTRA_CONF (lines for postgresql.conf), FLOOR_DIR, and
#   RESULTS_FILE: where to append the figures as key=value lines (spool_bench.sh).
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
RATE=${RATE:-2000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}
RESULTS_FILE=${RESULTS_FILE:-}
result() { [ -z "$RESULTS_FILE" ] || echo "$1=$2" >> "$RESULTS_FILE"; }

bench_cluster_start
trap bench_cluster_stop EXIT

psqlq <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                         amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
CREATE PUBLICATION bench_pub FOR TABLE bench_rows;
SQL
psqlq -c "SELECT pgsink.add_table('bench_rows', false)" >/dev/null
psqlq -c "SELECT pgsink.wait_for_delivery()" >/dev/null

if [ -n "${POLL_INTERVAL:-}" ]; then
    psqlq -c "ALTER SYSTEM SET pgsink.poll_interval = '$POLL_INTERVAL'" -c "SELECT pg_reload_conf()" >/dev/null
fi

if [ -z "${SKIP_THROUGHPUT:-}" ]; then
[ -n "${SKIP_WAL2JSON:-}" ] ||
    psqlq -c "SELECT pg_create_logical_replication_slot('bench_wal2json', 'wal2json')" >/dev/null
psqlq -c "SELECT pg_create_logical_replication_slot('bench_pgoutput', 'pgoutput')" >/dev/null
have_floor=
if [ -n "$FLOOR_DIR" ]; then
    psqlq -c "SELECT pg_create_logical_replication_slot('bench_floor', 'pgsink_floor')" >/dev/null
    have_floor=1
fi
echo "== throughput: $ROWS rows in $TXN_ROWS-row transactions"
pgsink_pause
: > "$BENCH_DIR/pgsink.jsonl"
t0=$(now_ms)
bench_load_rows "$ROWS" "$TXN_ROWS"
echo "load: $(( $(now_ms) - t0 )) ms"
end_lsn=$(psqlq -c "SELECT pg_current_wal_flush_lsn()")

# pgsink: resume, and time until the file holds everything, fsynced and confirmed.
t0=$(now_ms)
pgsink_resume
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
pgsink_ms=$(( $(now_ms) - t0 ))
pgsink_lines=$(grep -c '"op":"insert"' "$BENCH_DIR/pgsink.jsonl")
[ "$pgsink_lines" -ge "$ROWS" ] || { echo "pgsink delivered $pgsink_lines of $ROWS rows" >&2; exit 1; }

# The spool (when this pgsink has one): its size once everything is delivered.
# It holds the load's rows only if delivered segments are kept (pgsink.spool_retention).
spool_dir=$(psqlq -c "SELECT setting FROM pg_settings WHERE name = 'pgsink.spool_directory'")
spool_dir=${spool_dir:-pgsink_spool}
case "$spool_dir" in /*) ;; *) spool_dir="$DATA/$spool_dir" ;; esac
spool_retention=$(psqlq -c "SELECT setting || coalesce(unit, '') FROM pg_settings WHERE name = 'pgsink.spool_retention'")
if [ -d "$spool_dir" ]; then
    spool_bytes=$(du -sb "$spool_dir" | cut -f1)
    echo "spool $spool_dir: $spool_bytes bytes after $ROWS rows," \
         "$(( spool_bytes / ROWS )) bytes/row (pgsink.spool_retention: ${spool_retention:-unknown})"
    result spool_bytes "$spool_bytes"
fi
result spool_retention "${spool_retention:-unknown}"

if [ -z "${SKIP_WAL2JSON:-}" ]; then
# pg_recvlogical + wal2json format-version 2, to a file.
t0=$(now_ms)
pg_recvlogical -d bench --slot bench_wal2json --start --endpos "$end_lsn" -o format-version=2 \
    -f "$BENCH_DIR/wal2json.jsonl" --no-loop
w2j_ms=$(( $(now_ms) - t0 ))
w2j_lines=$(grep -c '"action":"I"' "$BENCH_DIR/wal2json.jsonl")
fi

# Raw in-server decoding with pgoutput, counting rows (the ceiling for any in-server consumer).
t0=$(now_ms)
raw_msgs=$(psqlq -c "SELECT count(*) FROM pg_logical_slot_get_binary_changes('bench_pgoutput', '$end_lsn', NULL, 'proto_version', '1', 'publication_names', 'bench_pub') WHERE get_byte(data, 0) = 73")
raw_ms=$(( $(now_ms) - t0 ))

# The floor: decoding and deforming every tuple, writing nothing (0 rows come back;
# the plugin logs how many changes it decoded, which must cover the load).
if [ -n "$have_floor" ]; then
    t0=$(now_ms)
    psqlq -c "SELECT count(*) FROM pg_logical_slot_get_changes('bench_floor', '$end_lsn', NULL)" >/dev/null
    floor_ms=$(( $(now_ms) - t0 ))
    floor_changes=$(grep -o 'pgsink_floor: decoded [0-9]* changes' "$BENCH_DIR/server.log" | tail -1 | awk '{ print $3 }')
    [ "${floor_changes:-0}" -ge "$ROWS" ] ||
        { echo "pgsink_floor decoded ${floor_changes:-no} changes of $ROWS" >&2; exit 1; }
fi

rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }
pgsink_rate=$(rate "$pgsink_lines" "$pgsink_ms")
raw_rate=$(rate "$raw_msgs" "$raw_ms")
printf '%-34s %10s rows %8s ms %10s rows/s\n' "pgsink -> file (fsynced)" "$pgsink_lines" "$pgsink_ms" "$pgsink_rate"
result pgsink_rate "$pgsink_rate"
if [ -z "${SKIP_WAL2JSON:-}" ]; then
    w2j_rate=$(rate "$w2j_lines" "$w2j_ms")
    printf '%-34s %10s rows %8s ms %10s rows/s\n' "pg_recvlogical + wal2json -> file" "$w2j_lines" "$w2j_ms" "$w2j_rate"
    result w2j_rate "$w2j_rate"
fi
printf '%-34s %10s rows %8s ms %10s rows/s\n' "raw pgoutput decoding (count)" "$raw_msgs" "$raw_ms" "$raw_rate"
result raw_rate "$raw_rate"
if [ -n "$have_floor" ]; then
    # Rows per second as the load's rows (the floor counts changes, not output rows).
    floor_rate=$(rate "$ROWS" "$floor_ms")
    printf '%-34s %10s rows %8s ms %10s rows/s\n' "floor: pgsink_floor decode+deform" "$ROWS" "$floor_ms" "$floor_rate"
    result floor_rate "$floor_rate"
fi
[ -n "${SKIP_WAL2JSON:-}" ] || awk -v a="$pgsink_rate" -v b="$w2j_rate" \
    'BEGIN { printf "ratio pgsink / wal2json:   %.2fx (target >= 8x)\n", a/b }'
awk -v a="$pgsink_rate" -v c="$raw_rate" \
    'BEGIN { printf "ratio pgsink / raw decode: %.2fx (target >= 0.6x)\n", a/c }'
[ -z "$have_floor" ] || awk -v a="$pgsink_rate" -v f="$floor_rate" \
    'BEGIN { printf "ratio pgsink / floor:      %.2fx\n", a/f }'
psqlq -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('bench_wal2json', 'bench_pgoutput', 'bench_floor')" >/dev/null

fi

if [ -z "${SKIP_LATENCY:-}" ]; then
echo "== latency: commit-to-file at $RATE rows/s for ${LATENCY_SECONDS}s"
bench_latency "$BENCH_DIR/pgsink.jsonl" "$RATE" "$LATENCY_SECONDS"
result latency_p50 "$(grep -o 'p50 [0-9.]*' "$BENCH_DIR/latency.txt" | cut -d' ' -f2)"
result latency_p99 "$(grep -o 'p99 [0-9.]*' "$BENCH_DIR/latency.txt" | cut -d' ' -f2)"

fi

if [ -z "${SKIP_PGBENCH:-}" ]; then
echo "== pgbench TPS with and without capture (${PGBENCH_SECONDS}s rounds, 2 clients, alternating, best of 2)"
pgbench -i -q -s 10 bench >/dev/null 2>&1
psqlq -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" >/dev/null
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
    psqlq -c "SELECT pgsink.add_table('$t', false)" >/dev/null
done
psqlq -c "SELECT pgsink.wait_for_delivery('5 min')" >/dev/null
run_pgbench() { pgbench -n -c 2 -j 2 -T "$PGBENCH_SECONDS" bench 2>/dev/null | awk '/^tps/ { printf "%d", $3 }'; }
best() { [ "$1" -gt "$2" ] && echo "$1" || echo "$2"; }
tps_off=0; tps_on=0
for round in 1 2; do
    # Without capture: the stream worker is stopped (no decoding at all).
    pgsink_pause
    psqlq -c "CHECKPOINT" >/dev/null
    tps_off=$(best "$tps_off" "$(run_pgbench)")
    # With capture: all four tables captured, delivered to the file as they commit.
    pgsink_resume
    psqlq -c "SELECT pgsink.wait_for_delivery('5 min')" >/dev/null
    psqlq -c "CHECKPOINT" >/dev/null
    tps_on=$(best "$tps_on" "$(run_pgbench)")
done
psqlq -c "SELECT pgsink.wait_for_delivery('5 min')" >/dev/null
echo "pgbench TPS without capture: $tps_off"
echo "pgbench TPS with capture:    $tps_on"
result tps_off "$tps_off"
result tps_on "$tps_on"
awk -v a="$tps_on" -v b="$tps_off" 'BEGIN { printf "ratio: %.2fx (target >= 0.9x)\n", a/b }'
fi

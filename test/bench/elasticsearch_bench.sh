#!/usr/bin/env bash
# elasticsearch_bench.sh: the Elasticsearch sink against the file sink, in one
# run, on one cluster (issue 12's figures):
#   ROWS rows (default 1M, TXN_ROWS-row transactions, default 1000) go into
#   the spool (kept: pgsink.spool_retention = 1d); then each sink in turn is
#   rewound to the spool's start (pgsink.rewind_sink) and timed until its
#   cursor is back at the spool's end: the same backlog, read from the
#   spool, delivered by each; PAIRS times in turn (default 3), and the
#   medians compared (one run on a 2-core machine swings by a fifth).
# No Elasticsearch can be installed here, and the strict Python fake of the
# TAP tests takes a few thousand documents a second: the sink talks to
# es_bulk_receiver.c (built here), which answers every _bulk with valid
# per-item results ("errors":false, one created item per action) and the
# index and mapping requests with what Elasticsearch answers, but stores
# nothing. The figure is the sink's own rate (encoding, _bulk bodies, the
# answers read), not an Elasticsearch cluster's.
#
# Usage: test/bench/elasticsearch_bench.sh   (as a user that may run initdb; not root)
#        ROWS=200000 test/bench/elasticsearch_bench.sh
#        PERF_DATA=/tmp/es.perf test/bench/elasticsearch_bench.sh   (profile the delivery worker)
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
PAIRS=${PAIRS:-3}
ES_PORT=${ES_PORT:-5493}
BENCH_EXTRA_CONF="pgsink.sink = 'file, elasticsearch'
pgsink.elasticsearch_url = 'http://127.0.0.1:$ES_PORT'
pgsink.spool_retention = '1d'
${BENCH_EXTRA_CONF:-}"

mkdir -p "$BENCH_DIR"
cc -O2 -Wall -Werror -o "$BENCH_DIR/es_bulk_receiver" test/bench/es_bulk_receiver.c
rm -f "$BENCH_DIR/es.count"
"$BENCH_DIR/es_bulk_receiver" "$ES_PORT" "$BENCH_DIR/es.count" &
receiver=$!
for _ in $(seq 1 100); do [ -f "$BENCH_DIR/es.count" ] && break; sleep 0.05; done
bench_cluster_start
trap 'bench_cluster_stop; kill $receiver 2>/dev/null; wait $receiver 2>/dev/null || true' EXIT

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
end=$(psqlq -c "SELECT durable_offset FROM pgsink.spool")

rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }

echo "== delivery rate: a backlog of $ROWS rows in $TXN_ROWS-row transactions, from the spool"
echo "each sink rewound and timed $PAIRS times, in turn (file, elasticsearch, file, ...): the medians"
fpid=$(worker_pid file)
wpid=$(worker_pid elasticsearch)
file_runs=() es_runs=() fcpu=0 cpu=0 rcpu=0 mcpu=0 faults=0
for pass in $(seq 1 "$PAIRS"); do
    c0=$(cpu_ms "$fpid")
    file_runs+=("$(bench_time_sink file "$end")")
    fcpu=$(( fcpu + $(cpu_ms "$fpid") - c0 ))
    before=$(cat "$BENCH_DIR/es.count")
    cpu0=$(cpu_ms "$wpid") rcpu0=$(cpu_ms "$receiver") mcpu0=$(thread_cpu_ms "$wpid") f0=$(minor_faults "$wpid")
    # PERF_DATA=file: perf record (cpu-clock, call graphs) of the delivery worker's last pass.
    [ -n "${PERF_DATA:-}" ] && [ "$pass" = "$PAIRS" ] &&
        { perf record -q -e cpu-clock -g -p "$wpid" -o "$PERF_DATA" 2>/dev/null & perf_pid=$!; sleep 0.2; }
    es_runs+=("$(bench_time_sink elasticsearch "$end")")
    [ -n "${PERF_DATA:-}" ] && [ "$pass" = "$PAIRS" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
    cpu=$(( cpu + $(cpu_ms "$wpid") - cpu0 )) rcpu=$(( rcpu + $(cpu_ms "$receiver") - rcpu0 ))
    mcpu=$(( mcpu + $(thread_cpu_ms "$wpid") - mcpu0 )) faults=$(( faults + $(minor_faults "$wpid") - f0 ))
    got=$(( $(cat "$BENCH_DIR/es.count") - before ))
    [ "$got" -ge "$ROWS" ] || { echo "the receiver got $got of $ROWS documents" >&2; exit 1; }
done
file_ms=$(bench_median "${file_runs[@]}") es_ms=$(bench_median "${es_runs[@]}")
printf '%-28s %10s rows %8s ms %10s rows/s   (runs: %s ms)\n' "file (fsynced)" "$ROWS" "$file_ms" \
    "$(rate "$ROWS" "$file_ms")" "${file_runs[*]}"
echo "CPU time while the file sink delivered (per run): its delivery worker $((fcpu / PAIRS)) ms"
printf '%-28s %10s rows %8s ms %10s rows/s   (runs: %s ms)   elasticsearch / file: %s\n' \
    "elasticsearch (_bulk)" "$ROWS" "$es_ms" "$(rate "$ROWS" "$es_ms")" "${es_runs[*]}" \
    "$(awk -v f="$file_ms" -v e="$es_ms" 'BEGIN { printf "%.2fx (target >= 0.5x)", f / e }')"
echo "CPU time while the elasticsearch sink delivered (per run): its delivery worker" \
    "$((cpu / PAIRS)) ms (its main thread $((mcpu / PAIRS)) ms, the encoding thread the rest)," \
    "the receiver $((rcpu / PAIRS)) ms; the worker's page faults: $((faults / PAIRS))"
parked=$(psqlq -c "SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'elasticsearch'")
[ "$parked" = 0 ] || { echo "$parked entries parked" >&2; exit 1; }

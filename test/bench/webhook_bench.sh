#!/usr/bin/env bash
# webhook_bench.sh: the webhook sink against the file sink, in one run, on one
# cluster (issue 10's figures):
#
#   1. Delivery rate: ROWS rows (default 1M, 1000-row transactions) go into
#      the spool (kept: pgsink.spool_retention = 1d); then each sink in turn
#      is rewound to the spool's start (pgsink.rewind_sink) and timed until
#      its cursor is back at the spool's end: the same backlog, read from the
#      spool, delivered by each. The receiver (ack_receiver.c, built here)
#      only acknowledges. The webhook runs once per IN_FLIGHT_RATE value
#      (pgsink.max_in_flight; default "1 2"), signed (pgsink.webhook_secret),
#      then once unsigned (UNSIGNED=0 skips it): the HMAC's share. All of
#      them PAIRS times in turn (default 3), and the medians compared (one
#      run on a 2-core machine swings by a fifth).
#   2. Scaling with requests in flight: a receiver that answers each request
#      in 50 ms (ack_receiver.py, threaded), the first SCALING_ROWS rows
#      (default 200k) in batches of SCALING_BATCH (default 256kB), for each
#      max_in_flight in IN_FLIGHT (default "1 2 4 8 16").
#   3. Commit-to-receiver latency at RATE rows/s (default 2000) for
#      LATENCY_SECONDS (default 20): ack_receiver.py stores each entry as it
#      arrives, latency_tail.py follows that store.
#
# Usage: test/bench/webhook_bench.sh   (as a user that may run initdb; not root)
#        SKIP_SCALING=1 SKIP_LATENCY=1 ROWS=200000 test/bench/webhook_bench.sh
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
PAIRS=${PAIRS:-3}
SCALING_ROWS=${SCALING_ROWS:-200000}
SCALING_BATCH=${SCALING_BATCH:-256kB}
IN_FLIGHT=${IN_FLIGHT:-1 2 4 8 16}
IN_FLIGHT_RATE=${IN_FLIGHT_RATE:-1 2}
RATE=${RATE:-2000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
RECEIVER_PORT=${RECEIVER_PORT:-5479}
SECRET='whsec_cGdzaW5rLWJlbmNoLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ=='
BENCH_EXTRA_CONF="pgsink.sink = 'file, webhook'
pgsink.webhook_url = 'http://127.0.0.1:$RECEIVER_PORT/'
pgsink.webhook_secret = '$SECRET'
pgsink.spool_retention = '1d'
${BENCH_EXTRA_CONF:-}"

mkdir -p "$BENCH_DIR"
cc -O2 -Wall -Werror -o "$BENCH_DIR/ack_receiver" test/bench/ack_receiver.c
receiver=
start_receiver() {
    stop_receiver
    rm -f "$BENCH_DIR/received.count"
    "$@" &
    receiver=$!
    for _ in $(seq 1 100); do [ -f "$BENCH_DIR/received.count" ] && return 0; sleep 0.05; done
    echo "the receiver did not start" >&2; exit 1
}
stop_receiver() { [ -z "$receiver" ] || { kill "$receiver" 2>/dev/null; wait "$receiver" 2>/dev/null || true; }; receiver=; }
set_conf() { psqlq -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; }

start_receiver "$BENCH_DIR/ack_receiver" "$RECEIVER_PORT" "$BENCH_DIR/received.count"
bench_cluster_start
trap 'bench_cluster_stop; stop_receiver' EXIT

psqlq <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                         amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
SQL
psqlq -c "SELECT pgsink.add_table('bench_rows', false)" >/dev/null
psqlq -c "SELECT pgsink.wait_for_delivery()" >/dev/null

pgsink_pause
bench_load_rows "$SCALING_ROWS" "$TXN_ROWS"
pgsink_resume
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
scaling_end=$(psqlq -c "SELECT durable_offset FROM pgsink.spool")
pgsink_pause
bench_load_rows "$((ROWS - SCALING_ROWS))" "$TXN_ROWS"
pgsink_resume
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
end=$(psqlq -c "SELECT durable_offset FROM pgsink.spool")

rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }

echo "== 1. delivery rate: a backlog of $ROWS rows in $TXN_ROWS-row transactions, from the spool"
echo "each rewound and timed $PAIRS times, in turn (file, webhook, ..., file, ...): the medians"
declare -A runs cpu faults rcpu
timed_webhook() { # $1: the label
    local before got c0 f0 r0 wpid
    before=$(cat "$BENCH_DIR/received.count")
    # The worker restarts when a setting it uses changes: its pid, each run.
    wpid=$(worker_pid webhook)
    c0=$(cpu_ms "$wpid") f0=$(minor_faults "$wpid") r0=$(cpu_ms "$receiver")
    runs[$1]="${runs[$1]:-} $(bench_time_sink webhook "$end")"
    cpu[$1]=$(( ${cpu[$1]:-0} + $(cpu_ms "$wpid") - c0 ))
    rcpu[$1]=$(( ${rcpu[$1]:-0} + $(cpu_ms "$receiver") - r0 ))
    faults[$1]=$(( ${faults[$1]:-0} + $(minor_faults "$wpid") - f0 ))
    got=$(( $(cat "$BENCH_DIR/received.count") - before ))
    [ "$got" -ge "$ROWS" ] || { echo "the receiver got $got of $ROWS entries" >&2; exit 1; }
}
for _ in $(seq 1 "$PAIRS"); do
    fpid=$(worker_pid file) c0=$(cpu_ms "$fpid")
    runs[file]="${runs[file]:-} $(bench_time_sink file "$end")"
    cpu[file]=$(( ${cpu[file]:-0} + $(cpu_ms "$fpid") - c0 ))
    for n in $IN_FLIGHT_RATE; do
        set_conf pgsink.max_in_flight "$n"
        timed_webhook "webhook, $n in flight"
    done
    if [ "${UNSIGNED:-1}" != 0 ]; then
        set_conf pgsink.max_in_flight 1
        set_conf pgsink.webhook_secret ''
        timed_webhook "webhook, unsigned, 1"
        set_conf pgsink.webhook_secret "$SECRET"
    fi
done
# shellcheck disable=SC2086
file_ms=$(bench_median ${runs[file]})
printf '%-28s %10s rows %8s ms %10s rows/s   (runs:%s ms)\n' "file (fsynced)" "$ROWS" "$file_ms" \
    "$(rate "$ROWS" "$file_ms")" "${runs[file]}"
echo "    CPU per run: its delivery worker $(( cpu[file] / PAIRS )) ms"
labels=()
for n in $IN_FLIGHT_RATE; do labels+=("webhook, $n in flight"); done
[ "${UNSIGNED:-1}" = 0 ] || labels+=("webhook, unsigned, 1")
for label in "${labels[@]}"; do
    # shellcheck disable=SC2086
    ms=$(bench_median ${runs[$label]})
    target=" (target >= 0.8x)"
    case $label in *unsigned*) target= ;; esac
    printf '%-28s %10s rows %8s ms %10s rows/s   (runs:%s ms)   webhook / file: %s\n' \
        "$label" "$ROWS" "$ms" "$(rate "$ROWS" "$ms")" "${runs[$label]}" \
        "$(awk -v f="$file_ms" -v w="$ms" -v t="$target" 'BEGIN { printf "%.2fx%s", f / w, t }')"
    echo "    CPU per run: its delivery worker $(( cpu[$label] / PAIRS )) ms (all threads," \
         "$(( faults[$label] / PAIRS )) page faults), the receiver $(( rcpu[$label] / PAIRS )) ms"
done

if [ -z "${SKIP_SCALING:-}" ]; then
echo "== 2. requests in flight against a receiver that answers in 50 ms: $SCALING_ROWS rows, batches of $SCALING_BATCH"
start_receiver python3 test/bench/ack_receiver.py "$RECEIVER_PORT" "$BENCH_DIR/received.count" 0.05
set_conf pgsink.batch_bytes "$SCALING_BATCH"
base=
for n in $IN_FLIGHT; do
    set_conf pgsink.max_in_flight "$n"
    ms=$(bench_time_sink webhook "$scaling_end")
    r=$(rate "$SCALING_ROWS" "$ms")
    base=${base:-$r}
    printf 'max_in_flight %3s  %8s ms %10s rows/s  %5s\n' "$n" "$ms" "$r" \
        "$(awk -v r="$r" -v b="$base" 'BEGIN { printf "%.1fx", r / b }')"
done
# Back to the end of the spool before the next phase.
set_conf pgsink.max_in_flight 8
bench_time_sink webhook "$end" >/dev/null
psqlq -c "ALTER SYSTEM RESET pgsink.batch_bytes" -c "ALTER SYSTEM RESET pgsink.max_in_flight" -c "SELECT pg_reload_conf()" >/dev/null
fi

if [ -z "${SKIP_LATENCY:-}" ]; then
echo "== 3. latency: commit-to-receiver at $RATE rows/s for ${LATENCY_SECONDS}s (one request in flight)"
psqlq -c "ALTER SYSTEM RESET pgsink.max_in_flight" -c "SELECT pg_reload_conf()" >/dev/null
rm -f "$BENCH_DIR/received.jsonl" && touch "$BENCH_DIR/received.jsonl"
start_receiver python3 test/bench/ack_receiver.py "$RECEIVER_PORT" "$BENCH_DIR/received.count" 0 "$BENCH_DIR/received.jsonl"
psqlq -c "SELECT pgsink.wait_for_delivery('5 min')" >/dev/null
bench_latency "$BENCH_DIR/received.jsonl" "$RATE" "$LATENCY_SECONDS"
fi

#!/usr/bin/env bash
# webhook_bench.sh: the webhook sink's delivery rate against the file sink's,
# in one run, on one cluster: ROWS rows (default 1M, 1000-row transactions)
# go into the spool (kept: pgsink.spool_retention = 1d); then each sink in
# turn is rewound to the spool's start (pgsink.rewind_sink) and timed until
# its cursor is back at the spool's end: the same backlog, read from the
# spool, delivered by each. The receiver (ack_receiver.py) only acknowledges.
#
# Usage: test/bench/webhook_bench.sh   (as a user that may run initdb; not root)
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
RECEIVER_PORT=${RECEIVER_PORT:-5479}
BENCH_EXTRA_CONF="pgsink.sink = 'file, webhook'
pgsink.webhook_url = 'http://127.0.0.1:$RECEIVER_PORT/'
pgsink.spool_retention = '1d'
${BENCH_EXTRA_CONF:-}"

python3 test/bench/ack_receiver.py "$RECEIVER_PORT" "$BENCH_DIR/received.count" &
receiver=$!
bench_cluster_start
trap 'bench_cluster_stop; kill $receiver 2>/dev/null' EXIT

psqlq <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, account int NOT NULL, note text,
                         amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
SQL
psqlq -c "SELECT pgsink.add_table('bench_rows', false)" >/dev/null
psqlq -c "SELECT pgsink.wait_for_delivery()" >/dev/null

echo "== webhook vs file: a backlog of $ROWS rows in $TXN_ROWS-row transactions"
pgsink_pause
bench_load_rows "$ROWS" "$TXN_ROWS"
pgsink_resume
psqlq -c "SELECT pgsink.wait_for_delivery('30 min')" >/dev/null
end=$(psqlq -c "SELECT durable_offset FROM pgsink.spool")
declare -A done_ms
for sink in file webhook; do
    t0=$(now_ms)
    psqlq -c "SELECT pgsink.rewind_sink('$sink', '-infinity')" >/dev/null
    until [ "$(psqlq -c "SELECT cursor_offset >= $end AND state = 'idle' FROM pgsink.sinks WHERE sink = '$sink'")" = t ]; do
        sleep 0.02
    done
    done_ms[$sink]=$(( $(now_ms) - t0 ))
done
received=$(cat "$BENCH_DIR/received.count")
[ "$received" -ge $((2 * ROWS)) ] || { echo "the receiver got $received of $((2 * ROWS)) entries" >&2; exit 1; }
for sink in file webhook; do
    printf '%-8s %10s rows %8s ms %10s rows/s\n' "$sink" "$ROWS" "${done_ms[$sink]}" \
        $(( ROWS * 1000 / (done_ms[$sink] > 0 ? done_ms[$sink] : 1) ))
done
awk -v f="${done_ms[file]}" -v w="${done_ms[webhook]}" \
    'BEGIN { printf "webhook / file delivery rate: %.2fx (target >= 0.8x)\n", f / w }'

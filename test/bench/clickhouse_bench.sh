#!/usr/bin/env bash
# clickhouse_bench.sh: the ClickHouse sink against its floors, in one run, on
# one cluster and one private clickhouse-server (Debian's):
#   - the file sink's delivery rate of the same backlog;
#   - the ClickHouse sink's: ROWS rows (default 1M, 1000-row transactions)
#     in the spool (kept: pgsink.spool_retention = 1d), each sink rewound to
#     the spool's start (pgsink.rewind_sink) and timed back to its end;
#   - the server's floor: the same rows, already encoded as JSONEachRow (read
#     back from the sink's table), POSTed with curl into a copy of the table,
#     in pieces of the sink's batch size.
# It reports the server's and the delivery worker's shares of the CPU while
# the sink delivers.
#
# Usage: test/bench/clickhouse_bench.sh   (as a user that may run initdb; not root)
cd "$(dirname "$0")/../.."
source test/bench/lib.sh
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
CH_PORT=${CH_PORT:-5495}
CH_DIR="$BENCH_DIR/clickhouse"
CH="http://127.0.0.1:$CH_PORT"

mkdir -p "$CH_DIR"
cat > "$CH_DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$CH_DIR/server.log</log><errorlog>$CH_DIR/error.log</errorlog></logger>
  <http_port>$CH_PORT</http_port><tcp_port>$((CH_PORT + 1))</tcp_port><listen_host>127.0.0.1</listen_host>
  <path>$CH_DIR/data/</path><users_config>users.xml</users_config>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
XML
cat > "$CH_DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex><profiles><default/></profiles>
  <users><default><password/><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default/></quotas></yandex>
XML
rm -rf "$CH_DIR/data" "$CH_DIR/pid"
clickhouse-server --config-file="$CH_DIR/config.xml" --daemon --pid-file="$CH_DIR/pid"
for _ in $(seq 1 300); do curl -sf "$CH/ping" >/dev/null && break; sleep 0.1; done
curl -sf "$CH/ping" >/dev/null || { echo "clickhouse-server did not start: see $CH_DIR/error.log" >&2; exit 1; }
ch_pid=$(cat "$CH_DIR/pid")
# Stopped, and gone (its port free for the next run), at exit.
ch_stop() { kill "$ch_pid" 2>/dev/null; while kill -0 "$ch_pid" 2>/dev/null; do sleep 0.1; done; }
chq() { curl -sf --data-binary "$1" "$CH/"; }

BENCH_EXTRA_CONF="pgsink.sink = 'file, clickhouse'
pgsink.clickhouse_url = '$CH'
pgsink.spool_retention = '1d'
${BENCH_EXTRA_CONF:-}"
bench_cluster_start
trap 'bench_cluster_stop; ch_stop' EXIT

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

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rate() { echo $(( ROWS * 1000 / ($1 > 0 ? $1 : 1) )); }

echo "== a backlog of $ROWS rows in $TXN_ROWS-row transactions, from the spool"
file_ms=$(bench_time_sink file "$end")
printf '%-34s %8s ms %10s rows/s\n' "file sink (fsynced)" "$file_ms" "$(rate "$file_ms")"
worker=$(ps -o pid=,args= --ppid "$(head -1 "$DATA/postmaster.pid")" | awk '/pgsink delivery clickhouse/ { print $1 }')
c0=$(cpu_ticks "$ch_pid"); w0=$(cpu_ticks "$worker")
ch_ms=$(bench_time_sink clickhouse "$end")
c1=$(cpu_ticks "$ch_pid"); w1=$(cpu_ticks "$worker")
printf '%-34s %8s ms %10s rows/s   CPU, share of the time: server %s%%, delivery worker %s%%\n' \
    "clickhouse sink" "$ch_ms" "$(rate "$ch_ms")" "$(( (c1 - c0) * 10 * 100 / (ch_ms > 0 ? ch_ms : 1) ))" \
    "$(( (w1 - w0) * 10 * 100 / (ch_ms > 0 ? ch_ms : 1) ))"

# The floor: the same rows in insert form, POSTed with curl in batch-sized pieces.
chq "SELECT * FROM pgsink.public_bench_rows FINAL FORMAT JSONEachRow" > "$BENCH_DIR/rows.jsonl"
chq "CREATE TABLE pgsink.floor_copy AS pgsink.public_bench_rows" >/dev/null
split -C 16M "$BENCH_DIR/rows.jsonl" "$BENCH_DIR/piece."
t0=$(now_ms)
f0=$(cpu_ticks "$ch_pid")
for piece in "$BENCH_DIR"/piece.*; do
    curl -sf --data-binary @"$piece" "$CH/?query=INSERT%20INTO%20pgsink.floor_copy%20FORMAT%20JSONEachRow" >/dev/null
done
floor_ms=$(( $(now_ms) - t0 ))
f1=$(cpu_ticks "$ch_pid")
rm -f "$BENCH_DIR"/piece.* "$BENCH_DIR/rows.jsonl"
printf '%-34s %8s ms %10s rows/s   CPU, share of the time: server %s%%\n' \
    "floor: curl, JSONEachRow, 16 MB" "$floor_ms" "$(rate "$floor_ms")" \
    "$(( (f1 - f0) * 10 * 100 / (floor_ms > 0 ? floor_ms : 1) ))"
awk -v c="$ch_ms" -v f="$floor_ms" -v s="$file_ms" 'BEGIN {
    printf "clickhouse sink / curl floor: %.2fx (target >= 0.7x)\n", f / c
    printf "clickhouse sink / file sink:  %.2fx (target >= 0.5x)\n", s / c }'

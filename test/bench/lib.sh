# lib.sh: shared helpers for pgsink's benchmarks (sourced, not run).
# A throwaway cluster in $BENCH_DIR, on $BENCH_PORT, configured for pgsink.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"
BENCH_DIR=${BENCH_DIR:-$(pwd)/test/bench/out}
BENCH_PORT=${BENCH_PORT:-5477}
export PGHOST="$BENCH_DIR" PGPORT="$BENCH_PORT" PGDATABASE=bench
DATA="$BENCH_DIR/data"
# Where the benchmark-only output plugin pgsink_floor (test/bench/floor) was
# built: the cluster finds it there through dynamic_library_path, so it needs
# no install. Unset (and no build in test/bench/floor): the floor is skipped.
if [ -z "${FLOOR_DIR:-}" ] && [ -f test/bench/floor/pgsink_floor.so ]; then
    FLOOR_DIR=$(pwd)/test/bench/floor
fi
FLOOR_DIR=${FLOOR_DIR:-}

psqlq() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

bench_cluster_start() {
    pg_ctl -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$DATA" && mkdir -p "$BENCH_DIR"
    rm -f "$BENCH_DIR"/*.jsonl "$BENCH_DIR"/*.txt
    initdb -D "$DATA" -A trust >/dev/null
    cat >> "$DATA/postgresql.conf" <<CONF
port = $BENCH_PORT
listen_addresses = ''
unix_socket_directories = '$BENCH_DIR'
shared_preload_libraries = 'pgsink'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
output_plugin_libraries = 'pgoutput, test_decoding, pgsink, wal2json, pgsink_floor'
${FLOOR_DIR:+dynamic_library_path = '$FLOOR_DIR:\$libdir'}
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = on
pgsink.database = 'bench'
pgsink.file_path = '$BENCH_DIR/pgsink.jsonl'
${BENCH_EXTRA_CONF:-}
CONF
    pg_ctl -D "$DATA" -l "$BENCH_DIR/server.log" -w start >/dev/null
    createdb bench
    psqlq -c "CREATE EXTENSION pgsink"
}

bench_cluster_stop() { pg_ctl -D "$DATA" stop -m fast >/dev/null 2>&1 || true; }

# Pause or resume the pgsink stream worker (it stops while pgsink.database names no database).
pgsink_pause() {
    psqlq -c "ALTER SYSTEM SET pgsink.database = 'bench_paused'" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(psqlq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream'")" = 0 ] && return 0
        sleep 0.1
    done
    echo "pgsink stream worker did not stop" >&2; return 1
}
pgsink_resume() { psqlq -c "ALTER SYSTEM RESET pgsink.database" -c "SELECT pg_reload_conf()" >/dev/null; }

now_ms() { date +%s%3N; }

# Insert $1 rows into bench_rows in transactions of $2 rows.
bench_load_rows() {
    psqlq <<SQL
DO \$\$
BEGIN
  FOR i IN 1..($1 / $2) LOOP
    INSERT INTO bench_rows (account, note, amount)
    SELECT g % 1000, 'note number ' || g, g * 1.25 FROM generate_series(1, $2) g;
    COMMIT;
  END LOOP;
END
\$\$;
SQL
}

# Commit-to-arrival latency: single-row inserts at $2 rows/s for $3 s
# (pgbench -R) while latency_tail.py follows $1, where the entries arrive;
# its report goes to $BENCH_DIR/latency.txt and is printed.
bench_latency() {
    python3 test/bench/latency_tail.py "$1" "$(($3 + 3))" > "$BENCH_DIR/latency.txt" &
    local tail_pid=$!
    sleep 0.5
    echo "INSERT INTO bench_rows (account, note, amount) VALUES (1, 'latency probe', 1.00);" > "$BENCH_DIR/latency.sql"
    pgbench -n -f "$BENCH_DIR/latency.sql" -R "$2" -T "$3" -c 2 -j 2 bench > "$BENCH_DIR/latency_pgbench.txt" 2>&1
    wait "$tail_pid"
    cat "$BENCH_DIR/latency.txt"
}

# Wait until sink $1's cursor reaches spool offset $2. Polled from one
# session every 5 ms: a psql started every 10 ms cost about half a core,
# taken from the sink being timed (and more from a slower sink). A cursor
# not known (no row, or cursor_offset NULL while the worker restarts) is not
# there yet: a WHILE whose condition is NULL would end the wait at once.
bench_wait_cursor() {
    psqlq >/dev/null <<SQL
DO \$\$
BEGIN
  WHILE NOT coalesce((SELECT cursor_offset >= $2 FROM pgsink.sinks WHERE sink = '$1'), false) LOOP
    PERFORM pg_sleep(0.005);
  END LOOP;
END
\$\$;
SQL
}

# Rewind sink $1 to the spool's start; the milliseconds until its cursor
# reaches spool offset $2 again.
bench_time_sink() {
    local t0
    t0=$(now_ms)
    psqlq -c "SELECT pgsink.rewind_sink('$1', '-infinity')" >/dev/null
    bench_wait_cursor "$1" "$2"
    echo $(( $(now_ms) - t0 ))
}

# CPU time (ms, user + system) of process $1 so far.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
# The same for its main thread alone (a process's threads: /proc/PID/task/TID/stat).
thread_cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/task/$1/stat"; }
# Minor page faults of process $1 so far (all its threads): fresh memory.
minor_faults() { awk '{ print $10 }' "/proc/$1/stat"; }
# The pid of the delivery worker of sink $1.
worker_pid() { psqlq -c "SELECT pid FROM pgsink.sinks WHERE sink = '$1'"; }

# The median of the numbers given.
bench_median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

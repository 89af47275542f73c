#!/usr/bin/env bash
# scripts/demo.sh: see pgsink capture changes, on a throwaway cluster.
#
#   scripts/demo.sh
#
# Installs what is needed (Debian 12), builds and installs pgsink, then
# (re)creates a cluster in ./demo/data listening only on a unix socket in
# ./demo (port 5488), with pgsink streaming database "demo" to
# ./demo/changes.jsonl. It captures a table, inserts a few rows and prints
# the change lines that arrive. Running it again starts from scratch.
# Exits non-zero if no change arrived within 10 seconds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/common.sh
. "$REPO/scripts/common.sh"

PORT=5488
DEMO=$REPO/demo
DATA=$DEMO/data
CHANGES=$DEMO/changes.jsonl
WAIT_SECONDS=10

# initdb refuses root. Under sudo, the checkout's owner builds and runs the
# cluster (so that no root-owned files land in their checkout); when the
# checkout belongs to root (CI), the unprivileged $TEST_USER runs it.
CHECKOUT_OWNER=$(stat -c %U "$REPO")
if is_root && [ "$CHECKOUT_OWNER" != root ]; then
    TEST_USER=$CHECKOUT_OWNER
fi

echo "== dependencies"
install_packages "${PACKAGES[@]}"

echo "== build and install"
if is_root && [ "$CHECKOUT_OWNER" = root ]; then
    make -C "$REPO" -j2 PG_CONFIG="$PG_CONFIG" >/dev/null
else
    as_user make -C "$REPO" -j2 PG_CONFIG="$PG_CONFIG" >/dev/null
fi
as_root make -C "$REPO" install PG_CONFIG="$PG_CONFIG" >/dev/null

# As root, the cluster's user must be able to reach ./demo (a checkout under
# /root is not reachable: then the demo lives in /var/tmp and ./demo links there).
if is_root; then
    ensure_test_user
    if [ ! -L "$DEMO" ]; then
        mkdir -p "$DEMO"
        chown "$TEST_USER": "$DEMO"
    fi
    if ! as_user test -w "$DEMO/"; then
        target=/var/tmp/pgsink-demo-$(echo "$REPO" | md5sum | cut -c1-8)
        mkdir -p "$target"
        chown "$TEST_USER": "$target"
        rm -rf "$DEMO"
        ln -s "$target" "$DEMO"
    fi
    PG_CTL_CMD="runuser -u $TEST_USER -- $PGBIN/pg_ctl"
else
    mkdir -p "$DEMO"
    PG_CTL_CMD="$PGBIN/pg_ctl"
fi
DEMO=$(cd "$DEMO" && pwd -P)
DATA=$DEMO/data
CHANGES=$DEMO/changes.jsonl
# Unix socket paths are limited to 107 bytes: fall back to /tmp if needed.
SOCKDIR=$DEMO
if [ $(( ${#SOCKDIR} + 16 )) -gt 107 ]; then
    SOCKDIR=$(as_user mktemp -d /tmp/pgsink-demo-sock.XXXXXX)
fi

echo "== cluster in $DATA"
# A re-run replaces the previous cluster (and its changes file).
if [ -f "$DATA/postmaster.pid" ]; then
    as_user pg_ctl -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
fi
as_user rm -rf "$DATA" "$CHANGES" "$DEMO/server.log"
as_user initdb -D "$DATA" -A trust -U postgres >/dev/null
cat <<EOF | as_user tee -a "$DATA/postgresql.conf" >/dev/null

# pgsink demo
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCKDIR'
shared_preload_libraries = 'pgsink'
wal_level = logical
output_plugin_libraries = 'pgoutput, test_decoding, pgsink'
pgsink.database = 'demo'
pgsink.file_path = '$CHANGES'
EOF
as_user pg_ctl -D "$DATA" -l "$DEMO/server.log" -w start >/dev/null

psql_demo() { as_user psql -X -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U postgres "$@"; }

echo "== database demo, extension, table"
psql_demo -d postgres -qc 'CREATE DATABASE demo'
psql_demo -d demo -q <<'SQL'
CREATE EXTENSION pgsink;
CREATE TABLE public.example (id bigserial PRIMARY KEY, msg text);
SELECT pgsink.add_table('public.example');
SQL

# Rows inserted before the stream worker has its slot would only arrive by
# import: wait (briefly) for the worker to be streaming first.
for _ in $(seq 1 $((WAIT_SECONDS * 5))); do
    state=$(psql_demo -d demo -Atc 'SELECT state FROM pgsink.status' || true)
    [ "$state" = streaming ] && break
    sleep 0.2
done
echo "pgsink state: $state"

echo "== inserting rows"
psql_demo -d demo -q <<'SQL'
INSERT INTO public.example (msg) VALUES ('hello world'), ('bonjour'), ('hallo');
UPDATE public.example SET msg = 'hello again' WHERE id = 1;
DELETE FROM public.example WHERE id = 3;
SQL

echo "== waiting up to ${WAIT_SECONDS}s for $CHANGES"
arrived=no
for _ in $(seq 1 $((WAIT_SECONDS * 5))); do
    if [ -s "$CHANGES" ] && grep -q '"name":"example"' "$CHANGES" 2>/dev/null; then
        sleep 0.5 # let the rest of the batch land
        arrived=yes
        break
    fi
    sleep 0.2
done

if [ "$arrived" = yes ]; then
    echo "== $CHANGES"
    cat "$CHANGES"
else
    echo "== no change arrived in $CHANGES within ${WAIT_SECONDS}s; pgsink says:"
    psql_demo -d demo -x -c 'SELECT * FROM pgsink.status'
    psql_demo -d demo -c 'SELECT * FROM pgsink.tables'
    echo "(server log: $DEMO/server.log)"
fi

stop_dir=$DATA
[ "$DATA" = "$REPO/demo/data" ] && [ "$PWD" = "$REPO" ] && stop_dir=demo/data
cat <<EOF

== the demo cluster is running
connect: $( is_root && echo "runuser -u $TEST_USER -- " )psql -h $SOCKDIR -p $PORT -U postgres demo
changes: tail -f $CHANGES
stop:    $PG_CTL_CMD -D $stop_dir stop
EOF

[ "$arrived" = yes ]

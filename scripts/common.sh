# shellcheck shell=bash disable=SC2034
# scripts/common.sh: sourced by scripts/test.sh and scripts/demo.sh.
# What pgsink needs from Debian 12, and how to get it.

PG_MAJOR=15
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PGBIN/pg_config
PGXS_DIR=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs
# initdb refuses root: as root, clusters are run by this unprivileged user.
TEST_USER=${PGSINK_TEST_USER:-pgsink_test}

PACKAGES=(build-essential "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libavro-dev
          libcurl4-openssl-dev nlohmann-json3-dev libssl-dev libipc-run-perl
          "postgresql-$PG_MAJOR-wal2json" clang-format python3 openssl zlib1g-dev
          clickhouse-server prometheus)

is_root() { [ "$(id -u)" -eq 0 ]; }

# The BigQuery fake (test/t/bigquery_fake.py): RS256 JWTs and Avro files.
PACKAGES+=(python3-cryptography python3-avro)

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

# Install the packages that are not installed yet. Checking with dpkg first
# keeps a re-run (or CI on a prepared image) from paying for apt-get update.
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    # No service is started by a package (clickhouse-server's or prometheus'
    # would, and fail without an init system): tests start their own servers.
    local policy=/usr/sbin/policy-rc.d added=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    [ -z "$added" ] || as_root rm -f "$policy"
    return "$rc"
}

# As root, make sure the unprivileged user exists.
ensure_test_user() {
    id -u "$TEST_USER" >/dev/null 2>&1 ||
        useradd --create-home --shell /bin/bash "$TEST_USER"
}

# Run a command as the user that runs clusters (TEST_USER when root, else
# ourselves), with PostgreSQL's binaries first on PATH.
as_user() {
    if is_root; then
        runuser -u "$TEST_USER" -- env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

#!/usr/bin/env bash
# spool_bench.sh: pgsink's previous direct path (stream worker -> file) against
# the current one (stream worker -> spool -> delivery worker -> file), in one run.
#
#   sudo test/bench/spool_bench.sh                      # as root: it installs builds
#   ROWS=100000 LATENCY_SECONDS=5 PGBENCH_SECONDS=5 sudo -E test/bench/spool_bench.sh
#
# For each build, "baseline" (git revision BASELINE_REV, default ac6869f) then
# "current" (CURRENT_SRC, default this working tree; a directory or a git
# revision, e.g. CURRENT_SRC=HEAD), it installs that build and runs
# test/bench/stream_bench.sh's phases on a fresh throwaway cluster as
# PGSINK_TEST_USER (default pgsink_test): throughput over ROWS rows (pgsink,
# raw pgoutput decoding, and the floor: test/bench/floor's pgsink_floor, which
# decodes and deforms every tuple and outputs nothing), commit-to-file latency
# at RATE rows/s, pgbench TPS with and without capture. In the current run,
# pgsink.spool_retention = '1d' keeps delivered segments, so the spool's size
# after the load gives its bytes per row (skipped if the build lacks the GUC).
# It ends with a summary table, and always leaves the current build installed.
#
# Builds (make -s clean && make -j2 -s) run as the test user in a temporary
# directory; installing and benchmarking hold /tmp/pgsink_install.lock
# (PGSINK_INSTALL_LOCK), which scripts/test.sh takes too.
#
# Environment: ROWS (1000000), TXN_ROWS (1000), RATE (2000), LATENCY_SECONDS
# (20), PGBENCH_SECONDS (20), BASELINE_REV, CURRENT_SRC, BENCH_PORT (5478),
# JOBS (2), WAL2JSON=1 (also time pg_recvlogical + wal2json), KEEP_WORK=1
# (keep the temporary directory: sources, clusters, logs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_SRC="$REPO/test/bench"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
TEST_USER=${PGSINK_TEST_USER:-pgsink_test}
LOCK=${PGSINK_INSTALL_LOCK:-/tmp/pgsink_install.lock}
BASELINE_REV=${BASELINE_REV:-ac6869f}
CURRENT_SRC=${CURRENT_SRC:-$REPO}
JOBS=${JOBS:-2}
ROWS=${ROWS:-1000000}
TXN_ROWS=${TXN_ROWS:-1000}
RATE=${RATE:-2000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}
BENCH_PORT=${BENCH_PORT:-5478}

[ "$(id -u)" -eq 0 ] || { echo "spool_bench.sh: run as root (it installs builds)" >&2; exit 1; }
id -u "$TEST_USER" >/dev/null 2>&1 || { echo "spool_bench.sh: no user $TEST_USER" >&2; exit 1; }

as_user() { runuser -u "$TEST_USER" -- env PATH="$PGBIN:$PATH" "$@"; }
section() { echo; echo "=== $* ($(date +%T))"; }
git_repo() { git -c safe.directory='*' -C "$REPO" "$@"; }

WORK=$(mktemp -d /tmp/pgsink-spool-bench.XXXXXX)
chmod 755 "$WORK"
chown "$TEST_USER": "$WORK"

# A source tree into $2: $1 is a directory (a git checkout: its tracked and
# untracked files that are not ignored, as scripts/test.sh copies it) or a
# git revision of this repository.
export_tree() {
    local src=$1 dest=$2
    mkdir -p "$dest"
    if [ -d "$src" ]; then
        if git -c safe.directory='*' -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
            git -c safe.directory='*' -C "$src" ls-files -z --cached --others --exclude-standard |
                while IFS= read -r -d '' f; do
                    [ -e "$src/$f" ] && printf '%s\0' "$f"
                done |
                tar -C "$src" --null -T - -cf - | tar -C "$dest" -xf -
        else
            tar -C "$src" --exclude='*.o' --exclude='*.so' --exclude='*.bc' --exclude=./.git \
                --exclude=./results --exclude=./tmp_check --exclude=./test/bench/out \
                -cf - . | tar -C "$dest" -xf -
        fi
    else
        git_repo archive "$src" | tar -C "$dest" -xf -
    fi
    chown -R "$TEST_USER": "$dest"
}

build() {
    as_user make -C "$1" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
    as_user make -C "$1" -j"$JOBS" -s PG_CONFIG="$PG_CONFIG"
}

# ---------------------------------------------------------------------------
# Sources and builds, before taking the lock (they touch nothing installed).
section "sources: baseline $BASELINE_REV, current $CURRENT_SRC"
export_tree "$BASELINE_REV" "$WORK/baseline"
export_tree "$CURRENT_SRC" "$WORK/current"
# The harness (and the floor plugin) come from this script's tree, the same for both runs.
mkdir -p "$WORK/harness/test"
cp -r "$BENCH_SRC" "$WORK/harness/test/bench"
rm -rf "$WORK/harness/test/bench/out"
find "$WORK/harness" \( -name '*.o' -o -name '*.so' -o -name '*.bc' \) -delete
chown -R "$TEST_USER": "$WORK/harness"
FLOOR_BUILD="$WORK/harness/test/bench/floor"

section "build: floor plugin"
build "$FLOOR_BUILD"
section "build: baseline"
build "$WORK/baseline" || { echo "the baseline ($BASELINE_REV) does not build" >&2; exit 1; }
section "build: current"
build "$WORK/current" ||
    { echo "the current tree ($CURRENT_SRC) does not build (try CURRENT_SRC=HEAD)" >&2; exit 1; }

# The current build has pgsink.spool_retention? Then its run keeps delivered segments.
current_conf=
if grep -qa 'pgsink.spool_retention' "$WORK/current/pgsink.so"; then
    current_conf="pgsink.spool_retention = '1d'"
fi

# ---------------------------------------------------------------------------
# Installing and benchmarking: under the install lock, always ending with the
# current build installed.
install_build() {
    make -C "$1" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
}
other_installed=
install_current() {
    install_build "$WORK/current"
    # SQL scripts only the baseline has would be left behind: remove them.
    local f ext_dir
    ext_dir="$("$PG_CONFIG" --sharedir)/extension"
    for f in "$WORK"/baseline/sql/pgsink--*.sql; do
        [ -e "$WORK/current/sql/$(basename "$f")" ] || rm -f "$ext_dir/$(basename "$f")"
    done
    other_installed=
}
cleanup() {
    local rc=$?
    if [ -n "$other_installed" ]; then
        section "re-installing the current build"
        install_current || rc=1
    fi
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "waiting for $LOCK"
exec 9>>"$LOCK"
flock 9

# One run of stream_bench.sh's phases against the installed build; figures go to $WORK/$1.results.
run_bench() {
    local name=$1 extra=$2
    mkdir -p "$WORK/$name.out"
    chown "$TEST_USER": "$WORK/$name.out"
    : > "$WORK/$name.results"
    chown "$TEST_USER": "$WORK/$name.results"
    section "$name: benchmark (ROWS=$ROWS RATE=$RATE LATENCY_SECONDS=$LATENCY_SECONDS PGBENCH_SECONDS=$PGBENCH_SECONDS)"
    # 9>&-: the cluster must not inherit the lock.
    as_user env ROWS="$ROWS" TXN_ROWS="$TXN_ROWS" RATE="$RATE" LATENCY_SECONDS="$LATENCY_SECONDS" \
        PGBENCH_SECONDS="$PGBENCH_SECONDS" BENCH_DIR="$WORK/$name.out" BENCH_PORT="$BENCH_PORT" \
        FLOOR_DIR="$FLOOR_BUILD" RESULTS_FILE="$WORK/$name.results" BENCH_EXTRA_CONF="$extra" \
        SKIP_WAL2JSON="$([ -n "${WAL2JSON:-}" ] || echo 1)" \
        bash "$WORK/harness/test/bench/stream_bench.sh" 9>&-
    # The cluster's data is not needed any more (a 1M-row load is large).
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK/$name.out/data"
}

section "baseline: install"
other_installed=1
install_build "$WORK/baseline"
run_bench baseline ""

section "current: install"
install_current
run_bench current "$current_conf"

# ---------------------------------------------------------------------------
get() { sed -n "s/^$2=//p" "$WORK/$1.results" | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
b_rate=$(get baseline pgsink_rate); c_rate=$(get current pgsink_rate)
b_floor=$(get baseline floor_rate); c_floor=$(get current floor_rate)
b_raw=$(get baseline raw_rate); c_raw=$(get current raw_rate)
b_on=$(get baseline tps_on); b_off=$(get baseline tps_off)
c_on=$(get current tps_on); c_off=$(get current tps_off)
if [ -n "$current_conf" ] && [ -n "$(get current spool_bytes)" ]; then
    spool_bytes=$(get current spool_bytes)
    spool_row=$(awk -v a="$spool_bytes" -v r="$ROWS" 'BEGIN { printf "%.1f", a / r }')
    spool_note="($spool_bytes bytes in the spool after $ROWS rows, pgsink.spool_retention = 1d)"
elif [ -n "$current_conf" ]; then
    spool_row=-; spool_note="(skipped: the current run has no spool directory)"
else
    spool_row=-; spool_note="(skipped: pgsink.spool_retention is unknown to the current build)"
fi

section "summary: ROWS=$ROWS (in $TXN_ROWS-row transactions), latency at $RATE rows/s for ${LATENCY_SECONDS}s, pgbench ${PGBENCH_SECONDS}s rounds"
echo "baseline = $BASELINE_REV (stream worker -> file); current = $CURRENT_SRC (stream worker -> spool -> file)"
fmt='%-40s %16s %16s   %s\n'
# shellcheck disable=SC2059
{
printf "$fmt" "" "baseline" "current" "target"
printf "$fmt" "pgsink -> file, rows/s" "$b_rate" "$c_rate" ""
printf "$fmt" "floor (pgsink_floor), rows/s" "${b_floor:--}" "${c_floor:--}" ""
printf "$fmt" "raw pgoutput decoding, rows/s" "$b_raw" "$c_raw" ""
printf "$fmt" "pgsink / floor (same run)" "$(ratio "$b_rate" "$b_floor")" "$(ratio "$c_rate" "$c_floor")" "current >= 0.5x"
printf "$fmt" "pgsink / raw pgoutput (same run)" "$(ratio "$b_rate" "$b_raw")" "$(ratio "$c_rate" "$c_raw")" ""
printf "$fmt" "commit-to-file latency p50, ms" "$(get baseline latency_p50)" "$(get current latency_p50)" ""
printf "$fmt" "commit-to-file latency p99, ms" "$(get baseline latency_p99)" "$(get current latency_p99)" "< 50 ms"
printf "$fmt" "pgbench TPS without capture" "$b_off" "$c_off" ""
printf "$fmt" "pgbench TPS with capture" "$b_on" "$c_on" ""
printf "$fmt" "pgbench with / without" "$(ratio "$b_on" "$b_off")" "$(ratio "$c_on" "$c_off")" ">= 0.9x"
printf "$fmt" "spool bytes per row" "" "$spool_row" "$spool_note"
echo
printf '%-40s %16s\n' "current / baseline, pgsink rows/s" "$(ratio "$c_rate" "$b_rate")   (target >= 0.8x)"
printf '%-40s %16s\n' "current / floor, rows/s" "$(ratio "$c_rate" "$c_floor")   (target >= 0.5x)"
}

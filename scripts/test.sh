#!/usr/bin/env bash
# scripts/test.sh: the one command that runs pgsink's whole test suite.
#
#   scripts/test.sh
#
# On a fresh Debian 12 machine it installs what it needs, builds pgsink,
# installs it, and runs:
#   - clang-format --dry-run --Werror on src/ (one test),
#   - make installcheck (pg_regress, against a temporary instance; one test
#     per sql/*.sql file),
#   - the TAP tests in test/t/*.pl (one test per file).
# It ends with a line "N passed, N failed" and exits non-zero if anything failed.
#
# initdb refuses to run as root and CI runs as root: as root, the checkout is
# copied to a fresh directory owned by an unprivileged user (pgsink_test, or
# $PGSINK_TEST_USER), which builds and runs the tests; only apt-get and
# `make install` run as root. As a normal user, everything runs in place and
# sudo is used for apt-get and `make install`.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/common.sh
. "$REPO/scripts/common.sh"
JOBS=${JOBS:-2}
# TAP files run this many at a time (TAP_JOBS=1: one after the other).
TAP_JOBS=${TAP_JOBS:-2}

passed=0
failed=0
failures=()
pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAILED: $1"; }
section() { echo; echo "=== $* ($(date +%T))"; }
summary() {
    section "summary"
    local f
    for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
    echo "took $SECONDS s"
    echo "$passed passed, $failed failed"
}

# ---------------------------------------------------------------------------
section "dependencies"
install_packages "${PACKAGES[@]}"

# ---------------------------------------------------------------------------
# Where the tests run, and as whom.
if is_root; then
    ensure_test_user
    WORK=$(mktemp -d /tmp/pgsink-test.XXXXXX)
    # Copy the checkout's files (tracked and untracked, not ignored: no build
    # outputs, no old results), skipping files deleted in the work tree.
    # (safe.directory: a checkout owned by someone else, e.g. under sudo.)
    git_repo() { git -c safe.directory="$REPO" -C "$REPO" "$@"; }
    if git_repo rev-parse --git-dir >/dev/null 2>&1; then
        git_repo ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do
                [ -e "$REPO/$f" ] && printf '%s\0' "$f"
            done |
            tar -C "$REPO" --null -T - -cf - | tar -C "$WORK" -xf -
    else
        tar -C "$REPO" --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
            --exclude=./results --exclude=./tmp_check --exclude=./demo \
            --exclude=./test/tmp_check --exclude=./test/bench/out --exclude=./.git \
            -cf - . | tar -C "$WORK" -xf -
    fi
    chown -R "$TEST_USER": "$WORK"
    # The copy is removed at the end unless KEEP_WORK is set (to inspect logs).
    [ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
else
    WORK=$REPO
fi
cd "$WORK"
echo "testing in $WORK as $(as_user id -un)"

# ---------------------------------------------------------------------------
# Nothing else can run without a build: a failed build ends the run here.
section "build"
if ! as_user make -j"$JOBS" PG_CONFIG="$PG_CONFIG" ||
    ! as_root make install PG_CONFIG="$PG_CONFIG" >/dev/null; then
    fail "build"
    summary
    exit 1
fi

# ---------------------------------------------------------------------------
section "clang-format"
if clang-format --dry-run --Werror src/*/*.cpp src/*/*.h; then
    pass "clang-format"
else
    fail "clang-format (run: make format)"
fi

# ---------------------------------------------------------------------------
# pg_regress: the Makefile's REGRESS_OPTS start a temporary instance with
# test/conf/regress.conf, so no server has to be running.
section "pg_regress (make installcheck)"
rm -rf results regression.diffs regression.out tmp_check
log=$(mktemp)
set +e
as_user make installcheck PG_CONFIG="$PG_CONFIG" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One line per test: "test 01_gucs ... ok  12 ms" or "... FAILED".
regress_ok=$(grep -cE '\.\.\. ok' "$log" || true)
while read -r name; do
    fail "pg_regress $name"
done < <(grep -E '\.\.\. FAILED' "$log" |
         sed -E 's/^(test )?[[:space:]]*([^[:space:]]+).*/\2/')
for ((i = 0; i < regress_ok; i++)); do passed=$((passed + 1)); done
echo "pg_regress: $regress_ok ok"
if [ "$rc" -ne 0 ]; then
    if [ -s regression.diffs ]; then
        echo "--- regression.diffs"
        cat regression.diffs
    else
        # The run died before any test could fail (build, initdb, startup).
        fail "make installcheck (exit $rc)"
        [ -f tmp_check/log/postmaster.log ] && tail -n 50 tmp_check/log/postmaster.log
    fi
fi
rm -f "$log"

# ---------------------------------------------------------------------------
# TAP: PostgreSQL::Test::Cluster finds initdb & co. on PATH, pg_regress via
# PG_REGRESS (for --config-auth) and writes under $TESTDIR/tmp_check.
section "TAP (test/t), $TAP_JOBS at a time"
# Independent files run side by side (each has its own clusters, ports and
# receivers); each one's output is printed whole, in order, once all are done.
rm -rf test/tmp_check
out_dir=$(mktemp -d)
chmod 755 "$out_dir"
run_tap() {
    local t=$1 name start
    name=$(basename "$t" .pl)
    start=$SECONDS
    if as_user env PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
        TESTDIR="$WORK/test" PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-60}" \
        prove -I "$PGXS_DIR/src/test/perl" -I test/t "$t" > "$out_dir/$name.out" 2>&1; then
        echo 0 > "$out_dir/$name.rc"
    else
        echo 1 > "$out_dir/$name.rc"
    fi
    echo "  $( [ "$(cat "$out_dir/$name.rc")" = 0 ] && echo ok || echo FAILED ) $t ($((SECONDS - start)) s)"
}
for t in test/t/*.pl; do
    [ -e "$t" ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$TAP_JOBS" ]; do wait -n || true; done
    run_tap "$t" &
done
wait
for t in test/t/*.pl; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .pl)
    cat "$out_dir/$name.out"
    if [ "$(cat "$out_dir/$name.rc" 2>/dev/null)" = 0 ]; then
        pass "TAP $t"
    else
        fail "TAP $t"
        # The test's own log and the server logs say why.
        for tap_log in test/tmp_check/log/regress_log_"$name" \
            test/tmp_check/log/"$name"_*.log; do
            [ -f "$tap_log" ] || continue
            echo "--- tail of $tap_log"
            tail -n 60 "$tap_log"
        done
    fi
done
rm -rf "$out_dir"

# ---------------------------------------------------------------------------
summary
[ "$failed" -eq 0 ]

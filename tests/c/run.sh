#!/usr/bin/env bash
# Builds the library (if needed) and the C/C++ tests, runs every test linked against
# the shared and the static library under AddressSanitizer + UBSan, then runs the C
# tests once more under valgrind (a build without sanitizers), and finally installs
# the library into a temporary prefix (scripts/install.sh) and builds and runs the
# README's C example against it with CMake and with pkg-config. test_http syncs
# through a real sync server (datasync-server, built here) that this script starts
# on loopback for the run and stops at the end. Ends with a summary
# line "N passed, N failed" and exits non-zero when anything failed.
#
# Needs: a Rust toolchain, a C compiler and a C++17 compiler (gcc/g++ or clang),
# make, valgrind, cmake and pkg-config. Environment: CARGO_TARGET_DIR (where cargo
# builds; default target/), CC, CXX (compilers), ASAN_OPTIONS, UBSAN_OPTIONS
# (defaults below; set ASAN_OPTIONS=detect_leaks=0 where LeakSanitizer cannot run,
# e.g. under ptrace; the valgrind pass still checks for leaks).
set -u

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in
        /*) ;;
        *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; # cargo runs from $root below
    esac
    export CARGO_TARGET_DIR
fi
target="${CARGO_TARGET_DIR:-$root/target}"
libdir="$target/debug"
out="$target/c-tests"
logs="$out/logs"

passed=0
failed=0

pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/    /' "$2" | tail -40; }

summary() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

echo "== building the library"
# A default build must not export the test-only datasync_debug_panic.
if ! (cd "$root" && cargo build --lib); then
    fail "cargo build"
    summary
fi
if nm -D --defined-only "$libdir/libdatasync.so" | grep -q ' datasync_debug_panic$'; then
    fail "a default build exports datasync_debug_panic"
else
    pass "a default build has no datasync_debug_panic"
fi
# The tests use it: build with the feature, and declare it (-DDATASYNC_DEBUG_PANIC).
if ! (cd "$root" && cargo build --lib --features debug-panic); then
    fail "cargo build --features debug-panic"
    summary
fi

echo "== starting a sync server on loopback (for test_http)"
if ! (cd "$root" && cargo build -p datasync-server); then
    fail "cargo build -p datasync-server"
    summary
fi
server_work="$(mktemp -d)"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2> /dev/null
        wait "$server_pid" 2> /dev/null
        server_pid=""
    fi
    rm -rf "$server_work"
}
trap stop_server EXIT
server_token="c-tests-$$-$RANDOM$RANDOM"
printf '{"token": "%s", "device": "c-tests", "read": ["*"], "write": ["*"]}\n' "$server_token" \
    > "$server_work/tokens.jsonl"
"$libdir/datasync-server" --listen 127.0.0.1:0 --dir "$server_work/cloud" \
    --tokens "$server_work/tokens.jsonl" > "$server_work/out" 2> "$server_work/log" &
server_pid=$!
server_addr=""
for _ in $(seq 1 200); do
    server_addr="$(sed -n 's/^listening on //p' "$server_work/out" | head -n 1)"
    [ -n "$server_addr" ] && break
    sleep 0.1
done
if [ -z "$server_addr" ]; then
    fail "datasync-server did not start in 20 s" "$server_work/log"
    summary
fi
export DATASYNC_TEST_SERVER="http://$server_addr" DATASYNC_TEST_TOKEN="$server_token"

echo "== building the tests"
mkdir -p "$logs"
if ! make -C "$here" ROOT="$root" LIBDIR="$libdir" OUT="$out" all > "$logs/build.log" 2>&1; then
    fail "build of the sanitizer tests" "$logs/build.log"
    summary
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

for link in shared static; do
    for bin in "$out/$link"/test_*; do
        name="$link/$(basename "$bin")"
        log="$logs/$(basename "$bin")-$link.log"
        if "$bin" > "$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
    done
done

echo "== valgrind"
if ! command -v valgrind > /dev/null; then
    fail "valgrind is not installed (apt-get install -y valgrind)"
    summary
fi
if ! make -C "$here" ROOT="$root" LIBDIR="$libdir" OUT="$out" valgrind > "$logs/build-valgrind.log" 2>&1; then
    fail "build of the valgrind tests" "$logs/build-valgrind.log"
    summary
fi
for bin in "$out/valgrind"/test_*; do
    name="valgrind/$(basename "$bin")"
    log="$logs/$(basename "$bin")-valgrind.log"
    if env -u ASAN_OPTIONS -u UBSAN_OPTIONS valgrind --error-exitcode=1 --leak-check=full \
        --suppressions="$here/valgrind.supp" --quiet "$bin" > "$log" 2>&1; then
        pass "$name"
    else
        fail "$name" "$log"
    fi
done

# Last: the install replaces $libdir's libraries with a build without debug-panic.
echo "== packaging"
prefix="$out/prefix"
if bash "$here/package.sh" install "$prefix" > "$logs/package-install.log" 2>&1; then
    pass "package/install"
    for how in cmake pkgconfig; do
        log="$logs/package-$how.log"
        if bash "$here/package.sh" "$how" "$prefix" "$out/package-$how" > "$log" 2>&1; then
            pass "package/$how"
        else
            fail "package/$how" "$log"
        fi
    done
else
    fail "package/install" "$logs/package-install.log"
fi

summary

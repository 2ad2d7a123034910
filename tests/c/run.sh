#!/usr/bin/env bash
# Builds the library (if needed) and the C/C++ tests, runs every test linked against
# the shared and the static library under AddressSanitizer + UBSan, then runs the C
# tests once more under valgrind (a build without sanitizers). Ends with a summary
# line "N passed, N failed" and exits non-zero when anything failed.
#
# Needs: a Rust toolchain, a C compiler and a C++17 compiler (gcc/g++ or clang),
# make, and valgrind. Environment: CC, CXX (compilers), ASAN_OPTIONS, UBSAN_OPTIONS
# (defaults below; set ASAN_OPTIONS=detect_leaks=0 where LeakSanitizer cannot run,
# e.g. under ptrace; the valgrind pass still checks for leaks).
set -u

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/c-tests"
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
if nm -D --defined-only "$root/target/debug/libdatasync.so" | grep -q ' datasync_debug_panic$'; then
    fail "a default build exports datasync_debug_panic"
else
    pass "a default build has no datasync_debug_panic"
fi
# The tests use it: build with the feature, and declare it (-DDATASYNC_DEBUG_PANIC).
if ! (cd "$root" && cargo build --lib --features debug-panic); then
    fail "cargo build --features debug-panic"
    summary
fi

echo "== building the tests"
mkdir -p "$logs"
if ! make -C "$here" ROOT="$root" OUT="$out" all > "$logs/build.log" 2>&1; then
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
if ! make -C "$here" ROOT="$root" OUT="$out" valgrind > "$logs/build-valgrind.log" 2>&1; then
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

summary

#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time (libFuzzer through cargo-fuzz)
# and prints one line per target. Exits non-zero when a target crashes or fails to
# build; the crashing input is kept under fuzz/artifacts/<target>/.
#
# cargo-fuzz needs a nightly compiler: the nightly toolchain when rustup has one,
# otherwise the stable one with RUSTC_BOOTSTRAP=1. cargo-fuzz itself is installed
# from crates.io when missing.
#
#   FUZZ_SECONDS   seconds per target (default: 45 s shared by all targets, so the
#                  runs with their start-up stay within a minute once built)
#   FUZZ_TARGETS   space-separated targets to run (default: all)
#   FUZZ_TOOLCHAIN `stable` to use the stable compiler even where nightly exists
#   FUZZ_FLAGS     cargo-fuzz build flags (default: `--dev --sanitizer none`, a debug
#                  build with debug assertions and no AddressSanitizer: it builds in a
#                  fraction of the time, and the code under test is safe Rust plus
#                  the C boundary; set FUZZ_FLAGS="" for the release ASan build)
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi

toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

flags=(${FUZZ_FLAGS---dev --sanitizer none})
targets=(${FUZZ_TARGETS:-$(cargo fuzz list)})
seconds="${FUZZ_SECONDS:-$((45 / ${#targets[@]}))}"

mkdir -p target
if ! cargo "${toolchain[@]}" fuzz build "${flags[@]}" >target/build.log 2>&1; then
    tail -n 40 target/build.log
    echo "fuzz: build FAILED (${toolchain[*]:-stable, RUSTC_BOOTSTRAP=1})"
    exit 1
fi

failed=0
for target in "${targets[@]}"; do
    # New corpus entries go to a working copy outside git; the committed seeds are
    # read from fuzz/corpus/<target>.
    work="target/corpus/$target"
    log="target/logs/$target.log"
    mkdir -p "$work" "target/logs" "corpus/$target" "artifacts/$target"
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')"
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ok, ${runs:-?} inputs in ${seconds}s, corpus $(ls "$work" | wc -l)"
    else
        failed=$((failed + 1))
        crash="$(grep -o 'artifacts/[^ ]*' "$log" | tail -n 1)"
        grep -m 1 -B 2 -A 12 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log"
        echo "fuzz $target: FAILED (exit $status), input ${crash:-unknown}, log fuzz/$log"
    fi
done
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs every test of the project: the Rust suites (core, directory tier, CLI, C ABI
# checks), the C/C++ programs, and the Python, Kotlin and Swift bindings. Each stage
# runs even when an earlier one failed; the last line counts the stages.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

passed=0
failed=0
failures=()

stage() {
    local name="$1"
    shift
    echo
    echo "==== $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "==== $name: ok"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "==== $name: FAILED"
    fi
}

stage "rust (cargo test)" cargo test
stage "c and c++" bash tests/c/run.sh
stage "python bindings" bash bindings/python/run-tests.sh
stage "kotlin bindings" bash bindings/kotlin/run-tests.sh
stage "swift bindings" bash bindings/swift/run-tests.sh
stage "fuzz (bounded)" bash scripts/fuzz.sh

echo
if [ "$failed" -gt 0 ]; then
    echo "failed stages: ${failures[*]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

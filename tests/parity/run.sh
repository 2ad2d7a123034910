#!/usr/bin/env bash
# Runs the parity scenario through every door (Rust, C, Python, Kotlin, Swift) and
# compares each door's lines with tests/parity/expected.txt. Ends with
# "N passed, N failed, N skipped" and exits non-zero when a door failed.
#
#   tests/parity/run.sh [rust|c|python|kotlin|swift]...     (default: every door)
#
# How each door runs:
#   rust    cargo run --example parity                  (examples/parity.rs)
#   c       tests/parity/parity.c built against include/datasync.h and the debug
#           shared library, under AddressSanitizer + UBSan
#   python  tests/parity/parity.py with bindings/python/.venv, where the python
#           stage (bindings/python/run-tests.sh) installs the wheel; when the venv
#           has no datasync, a debug wheel is built and installed into it first
#   kotlin  the JUnit test ParityTest (bindings/kotlin/run-tests.sh -Dtest=ParityTest),
#           which writes its lines to bindings/kotlin/target/parity/kotlin.txt
#   swift   the XCTest ParityTests (bindings/swift/run-tests.sh --filter ParityTests)
#           where a Swift toolchain exists; otherwise a SKIP line, counted as skipped
#
# Environment: CARGO_TARGET_DIR (default target/), CC, ASAN_OPTIONS, UBSAN_OPTIONS.
set -u

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in
        /*) ;;
        *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;;
    esac
    export CARGO_TARGET_DIR
fi
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/parity"
expected="$here/expected.txt"
mkdir -p "$out"
cd "$root"

passed=0
failed=0
skipped=0

# Compares a door's output with the expected lines; shows the difference and the
# end of its log when they differ.
judge() {
    local door="$1" got="$2" log="$3"
    if [ -f "$got" ] && diff -q "$expected" "$got" > /dev/null; then
        passed=$((passed + 1))
        echo "PASS $door"
    else
        failed=$((failed + 1))
        echo "FAIL $door"
        if [ -f "$got" ]; then
            diff -u "$expected" "$got" | head -60 | sed 's/^/    /'
        else
            echo "    no output"
        fi
        [ -s "$log" ] && tail -30 "$log" | sed 's/^/    log: /'
    fi
}

door_rust() {
    cargo run --quiet --example parity > "$out/rust.txt" 2> "$out/rust.log"
    judge rust "$out/rust.txt" "$out/rust.log"
}

door_c() {
    local bin="$out/parity-c" log="$out/c.log"
    : > "$log"
    rm -f "$out/c.txt"
    if ! cargo build --quiet --lib >> "$log" 2>&1 ||
        ! "${CC:-cc}" -std=c11 -g -O1 -Wall -Wextra -Werror -I"$root/include" -pthread \
            -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
            "$here/parity.c" -o "$bin" -L"$target/debug" -Wl,-rpath,"$target/debug" -ldatasync >> "$log" 2>&1; then
        judge c "$out/c.txt" "$log"
        return
    fi
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}" \
        UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
        "$bin" > "$out/c.txt" 2>> "$log" || echo "exit status $?" >> "$log"
    judge c "$out/c.txt" "$log"
}

door_python() {
    local venv="$root/bindings/python/.venv" log="$out/python.log"
    : > "$log"
    rm -f "$out/python.txt"
    if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import datasync' > /dev/null 2>&1; then
        echo "bindings/python/.venv has no datasync: building a debug wheel" >> "$log"
        local wheels wheel
        wheels="$(mktemp -d)"
        if ! { [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"; } >> "$log" 2>&1 ||
            ! wheel="$(bash "$root/scripts/build-wheel.sh" --debug "$wheels" 2>> "$log" | tail -n 1)" ||
            ! "$venv/bin/python" -m pip install --quiet --no-deps "$wheel" >> "$log" 2>&1; then
            rm -rf "$wheels"
            judge python "$out/python.txt" "$log"
            return
        fi
        rm -rf "$wheels"
    fi
    # -I: the installed wheel, never the source tree.
    "$venv/bin/python" -I "$here/parity.py" > "$out/python.txt" 2>> "$log" || echo "exit status $?" >> "$log"
    judge python "$out/python.txt" "$log"
}

door_kotlin() {
    local got="$root/bindings/kotlin/target/parity/kotlin.txt" log="$out/kotlin.log"
    rm -f "$got"
    bash "$root/bindings/kotlin/run-tests.sh" -Dtest=ParityTest > "$log" 2>&1
    judge kotlin "$got" "$log"
}

door_swift() {
    if ! command -v swift > /dev/null 2>&1; then
        skipped=$((skipped + 1))
        echo "SKIP swift: swift not found; ParityTests runs where a Swift toolchain is installed"
        return
    fi
    local got="$out/swift.txt" log="$out/swift.log"
    rm -f "$got"
    PARITY_OUT="$got" bash "$root/bindings/swift/run-tests.sh" --filter ParityTests > "$log" 2>&1
    judge swift "$got" "$log"
}

doors=("$@")
[ ${#doors[@]} -eq 0 ] && doors=(rust c python kotlin swift)
for door in "${doors[@]}"; do
    case "$door" in
        rust | c | python | kotlin | swift) "door_$door" ;;
        *)
            echo "unknown door $door (rust, c, python, kotlin, swift)" >&2
            exit 2
            ;;
    esac
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Builds libdatasync and the crate's uniffi-bindgen, checks that the committed
# generated Kotlin (src/main/kotlin/datasync/ffi/datasync.kt) is what the bindgen
# produces now, and runs the JUnit suite on the JVM with Maven.
# UPDATE_BINDINGS=1 rewrites the committed file instead of failing on a difference.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
lib="$CARGO_TARGET_DIR/debug/libdatasync.so"

cargo build --manifest-path "$root/Cargo.toml" --lib
cargo build --manifest-path "$root/Cargo.toml" --features uniffi-cli --bin uniffi-bindgen

generated="$(mktemp -d)"
trap 'rm -rf "$generated"' EXIT
(cd "$root" && "$CARGO_TARGET_DIR/debug/uniffi-bindgen" generate --library "$lib" --language kotlin \
    --no-format --config "$here/uniffi.toml" --out-dir "$generated")
committed="$here/src/main/kotlin/datasync/ffi/datasync.kt"
if [ "${UPDATE_BINDINGS:-0}" = 1 ]; then
    mkdir -p "$(dirname "$committed")"
    cp "$generated/datasync/ffi/datasync.kt" "$committed"
elif ! diff -q "$generated/datasync/ffi/datasync.kt" "$committed" >/dev/null; then
    echo "bindings/kotlin: the committed generated bindings are stale; run UPDATE_BINDINGS=1 $0" >&2
    diff -u "$committed" "$generated/datasync/ffi/datasync.kt" | head -40 >&2 || true
    exit 1
fi

# HttpTest syncs through a real sync server, started by the test itself.
cargo build --manifest-path "$root/Cargo.toml" -p datasync-server
export DATASYNC_SERVER_BIN="$CARGO_TARGET_DIR/debug/datasync-server"

cd "$here"
# No library path on the command line: the pom finds target/debug (or
# $CARGO_TARGET_DIR/debug) itself, as it does for a user's plain `mvn test`.
exec mvn -B -ntp test "$@"

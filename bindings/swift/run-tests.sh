#!/usr/bin/env bash
# Builds libdatasync and the crate's uniffi-bindgen, checks that the committed
# generated Swift sources, FFI header and module map are what the bindgen produces
# now, and runs the XCTest suite where a Swift toolchain exists.
# UPDATE_BINDINGS=1 rewrites the committed files instead of failing on a difference.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
case "$(uname -s)" in Darwin) lib="$CARGO_TARGET_DIR/debug/libdatasync.dylib" ;; *) lib="$CARGO_TARGET_DIR/debug/libdatasync.so" ;; esac

cargo build --manifest-path "$root/Cargo.toml" --lib
cargo build --manifest-path "$root/Cargo.toml" --features uniffi-cli --bin uniffi-bindgen

generated="$(mktemp -d)"
trap 'rm -rf "$generated"' EXIT
(cd "$root" && "$CARGO_TARGET_DIR/debug/uniffi-bindgen" generate --library "$lib" --language swift \
    --no-format --config "$here/uniffi.toml" --out-dir "$generated")
mv "$generated/datasyncFFI.modulemap" "$generated/module.modulemap"

stale=0
for pair in "Datasync.swift:Sources/Datasync/Datasync.swift" \
            "datasyncFFI.h:Sources/datasyncFFI/include/datasyncFFI.h" \
            "module.modulemap:Sources/datasyncFFI/include/module.modulemap"; do
    from="$generated/${pair%%:*}"
    to="$here/${pair#*:}"
    if [ "${UPDATE_BINDINGS:-0}" = 1 ]; then
        cp "$from" "$to"
    elif ! diff -q "$from" "$to" >/dev/null 2>&1; then
        echo "bindings/swift: ${pair#*:} is stale; run UPDATE_BINDINGS=1 $0" >&2
        stale=1
    fi
done
[ "$stale" = 0 ] || exit 1
echo "bindings/swift: generated sources are current"

if ! command -v swift >/dev/null 2>&1; then
    echo "SKIP: swift not found; the Swift suite runs where a Swift toolchain is installed"
    exit 0
fi
cd "$here"
export DATASYNC_LIB_DIR="$CARGO_TARGET_DIR/debug"
exec swift test "$@"

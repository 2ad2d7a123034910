#!/usr/bin/env bash
# Builds the datasync Python wheel with maturin and prints its path on the last line.
#
#   scripts/build-wheel.sh [--debug] [OUT_DIR]      (OUT_DIR defaults to target/wheels)
#
# The wheel holds libdatasync and the Python module that the crate's own
# uniffi-bindgen generates, so installing it needs no Rust. The module loads the
# library through ctypes and uses no CPython C API, so the wheel is tagged
# `py3-none-<platform>`: one wheel for every Python 3 version, an even looser
# promise than abi3. The platform tag is manylinux where the library's glibc symbols
# allow (maturin checks them itself, as auditwheel does); WHEEL_COMPATIBILITY
# overrides the policy (e.g. `linux` for a plain linux tag, or `manylinux_2_28`).
# maturin comes from PATH, or is installed into target/wheel-tools from PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

profile=(--release)
if [ "${1:-}" = "--debug" ]; then
    profile=()
    shift
fi
out="${1:-$CARGO_TARGET_DIR/wheels}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if command -v maturin >/dev/null 2>&1; then
    maturin=maturin
else
    tools="$CARGO_TARGET_DIR/wheel-tools"
    if [ ! -x "$tools/bin/maturin" ]; then
        "${PYTHON:-python3}" -m venv "$tools"
        "$tools/bin/python" -m pip install --quiet "maturin>=1.11,<2" >&2
    fi
    maturin="$tools/bin/maturin"
fi

compat=()
if [ -n "${WHEEL_COMPATIBILITY:-}" ]; then
    compat=(--compatibility "$WHEEL_COMPATIBILITY")
fi

# A fresh directory, so the path printed is the wheel just built.
build="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
(cd "$root/bindings/python" && "$maturin" build "${profile[@]}" "${compat[@]}" --out "$build" >&2)
wheel="$(ls "$build"/datasync-*.whl)"
mv -f "$wheel" "$out/"
echo "$out/$(basename "$wheel")"

#!/usr/bin/env bash
# Builds the crate with each feature alone and with none, so that no feature
# combination rots, and checks that the core alone pulls none of the command's
# crates.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
    echo "== cargo build $*"
    local log
    log="$(cargo build --quiet "$@" 2>&1)" || { echo "$log" >&2; exit 1; }
    if grep -q '^warning' <<<"$log"; then
        echo "$log" >&2
        echo "cargo build $* warns" >&2
        exit 1
    fi
}

build --lib --no-default-features
build --lib --no-default-features --features capi
build --lib --no-default-features --features uniffi
build --lib --no-default-features --features http
build --no-default-features --features cli --bin datasync

core="$(cargo tree -e normal --no-default-features --prefix none)"
for crate in clap indicatif tempfile uniffi cbindgen ureq rustls ring; do
    if grep -q "^$crate " <<<"$core"; then
        echo "the core (--no-default-features) depends on $crate" >&2
        exit 1
    fi
done
echo "the core alone: $(grep -c . <<<"$(sort -u <<<"$core")") crates, none of the doors' or the command's"

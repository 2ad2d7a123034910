#!/usr/bin/env bash
# Regenerates tests/fixtures/format1/: a directory tier written in format 1 (which
# the example chooses; format 2 is the default) and expected.json, what format 1
# reads back from it. The committed fixture is the record of the bytes the code
# before format 2 wrote: regenerate it only if format 1 itself changes.
#
# The entities and tombstones come out the same on every run (the example sets the
# instance's clock); only the metadata's own `updatedAt` stamps take the wall clock.
# The lock file is left out: opening the directory creates it again.
set -euo pipefail
cd "$(dirname "$0")/.."

out=tests/fixtures/format1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo run --quiet --example make_format1_fixture -- "$work/tier" "$work/expected.json"
rm -f "$work/tier/datasync.lock"
if [ -e "$work/tier/recovering" ] || [ -e "$work/tier/corrupt" ]; then
    echo "the tier was not closed cleanly: $(ls "$work/tier")" >&2
    exit 1
fi

rm -rf "$out/tier" "$out/expected.json"
mkdir -p "$out"
cp -R "$work/tier" "$out/tier"
cp "$work/expected.json" "$out/expected.json"
echo "wrote $out/tier and $out/expected.json"
